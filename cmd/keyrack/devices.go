package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyrack/keyrack/appliance/wire"
)

// models lists model bindings or proposes one.
func (c *cli) models(ctx context.Context, args []string) error {
	if sub, rest := subcommand(args, "list"); sub == "list" {
		asJSON, err := c.listFlags("models list", rest)
		if err != nil {
			return err
		}
		var ans wire.ModelList
		if printed, err := c.listing(ctx, "/v1/models", asJSON, &ans); err != nil || printed {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BRAND\tMODEL\tKEYS\tSERIALS\tRE-KEY")
		for _, m := range ans.Models {
			keys, _ := json.Marshal(m.Keys)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%v\n", m.Brand, m.Model, keys, m.SerialSource, m.SerialPrefix, m.AllowRekey)
		}
		return tw.Flush()
	}
	switch args[0] {
	case "template":
		return c.modelTemplate(ctx, args[1:])
	case "templates":
		return c.listTemplates(ctx, args[1:])
	}
	if args[0] != "set" || len(args) < 3 {
		return usageErr("models [list] | models set BRAND MODEL -key TYPE=KEY ... [-serial-source request|assign] [-serial-prefix P] [-allow-rekey] | models template BRAND MODEL -file model.json | models templates")
	}
	fs, yes := c.stepFlags("models set")
	var keys listFlag
	fs.Var(&keys, "key", "assertion type and the key that signs it: serial=brand-serial (repeat)")
	source := fs.String("serial-source", "request", "where serials come from: the device's request, or assigned by the appliance")
	prefix := fs.String("serial-prefix", "", "prefix of assigned serials")
	rekey := fs.Bool("allow-rekey", false, "a known serial may move to a new device key (revision + 1)")
	if err := fs.Parse(args[3:]); err != nil {
		return usageErr("models set BRAND MODEL -key TYPE=KEY ...")
	}
	km := map[string]string{}
	for _, k := range keys {
		t, name, ok := strings.Cut(k, "=")
		if !ok {
			return usageErr("-key takes TYPE=KEYNAME")
		}
		km[t] = name
	}
	return c.propose(ctx, "POST", "/v1/models", wire.ModelBinding{Brand: args[1], Model: args[2], Keys: km,
		SerialSource: *source, SerialPrefix: *prefix, AllowRekey: *rekey}, false, *yes)
}

// signingLog prints the signing log, as a table or CSV.
func (c *cli) signingLog(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("log", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	q := url.Values{}
	for _, f := range []string{"type", "brand", "model", "serial", "client", "since", "until", "after", "limit"} {
		fs.Func(f, "filter by "+f, func(v string) error { q.Set(f, v); return nil })
	}
	asCSV := fs.Bool("csv", false, "CSV output")
	asJSON := fs.Bool("json", false, "print the appliance's JSON answer instead of the table")
	if err := fs.Parse(args); err != nil || *asCSV && *asJSON {
		return usageErr("log [-type T] [-model M] [-serial S] [-client C] [-since T] [-until T] [-after ID] [-limit N] [-csv | -json]")
	}
	if *asCSV {
		q.Set("format", "csv")
		resp, err := c.send(ctx, "GET", "/v1/signing-log?"+q.Encode(), "", nil, true)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
		}
		_, err = io.Copy(c.stdout, resp.Body)
		return err
	}
	var ans wire.LogPage
	if printed, err := c.listing(ctx, "/v1/signing-log?"+q.Encode(), *asJSON, &ans); err != nil || printed {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tTYPE\tBRAND/MODEL\tSERIAL\tCLIENT\tKEY")
	for _, e := range ans.Entries {
		// RFC3339Nano is how the time came over the wire, so the column
		// shows exactly the string the appliance sent.
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s/%s\t%s\t%s\t%.16s…\n", e.ID, e.Time.Format(time.RFC3339Nano), e.Type, e.Brand, e.Model, e.Serial, e.Client, e.KeyID)
	}
	return tw.Flush()
}
