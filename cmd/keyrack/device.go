package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/device"
)

const deviceUsage = "device register -api-key-file FILE -brand B -model M [-serial S] [-signing-key-file FILE | -model-file FILE]"

// deviceCmd plays a device registering as snapd does, for trying an
// appliance out: keyrack device register -api-key-file F -brand B -model M.
func (c *cli) deviceCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "register" {
		return usageErr(deviceUsage)
	}
	fs := flag.NewFlagSet("device register", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	keyFile := fs.String("api-key-file", "", "the device-service client's key (as in the gadget's device-service.headers)")
	signingKeyFile := fs.String("signing-key-file", "", "a signing client's key, to have the appliance sign a minimal model (without -model-file)")
	brand := fs.String("brand", "", "brand account id")
	model := fs.String("model", "", "model name")
	serial := fs.String("serial", "", "serial number to ask for (empty when the appliance assigns them)")
	modelFile := fs.String("model-file", "", "the device's model assertion (default: have the appliance sign a minimal one)")
	bits := fs.Int("bits", 4096, "device key size (snapd makes 4096)")
	if err := fs.Parse(args[1:]); err != nil || *keyFile == "" || *brand == "" || *model == "" || (*modelFile == "") == (*signingKeyFile == "") {
		return usageErr(deviceUsage)
	}
	key, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	hc, err := c.client()
	if err != nil {
		return err
	}
	cl := &device.Client{URL: c.url + "/v1/", APIKey: strings.TrimSpace(string(key)), HTTP: hc}
	fmt.Fprintf(c.stderr, "making a %d-bit device key...\n", *bits)
	d, err := device.New(*brand, *model, *bits)
	if err != nil {
		return err
	}
	if *modelFile != "" {
		if d.ModelAssertion, err = os.ReadFile(*modelFile); err != nil {
			return err
		}
	} else {
		// The model is a signing client's to ask for: the device-service
		// key is public and obtains serials only.
		sk, err := os.ReadFile(*signingKeyFile)
		if err != nil {
			return err
		}
		signer := &device.Client{URL: cl.URL, APIKey: strings.TrimSpace(string(sk)), HTTP: hc}
		if d.ModelAssertion, err = signer.SignModel(ctx, *model); err != nil {
			return fmt.Errorf("model: %w", err)
		}
	}
	s, as, err := cl.Register(ctx, d, *serial)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "registered: serial %s (revision %d), signed by %s\n", s.Serial(), s.Revision(), s.SignKeyID())
	enc := asserts.NewEncoder(c.stdout)
	for _, a := range as {
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
	return nil
}
