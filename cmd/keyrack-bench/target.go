package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/device"
)

// -target measures another device service (Serial Vault, or a keyrackd
// already running) with the load of keyrack's own end-to-end phase, so
// that the two figures differ by the service alone: the same simulated
// device keys (keyPool), request-ids fetched and serial-requests signed
// before the timed phase, the same minimal HTTP client, and only POST
// /v1/serial timed. Its flags live here rather than in main.go's list, so
// that this mode stays apart from the bench's own.
var (
	targetURL      = flag.String("target", "", "measure the device service at this URL (ending in /v1/) instead of starting keyrackd: POST request-id beforehand, POST serial timed")
	targetAPIKey   = flag.String("target-api-key", "", "-target: the api-key header the service wants")
	targetBrand    = flag.String("target-brand", "", "-target: the brand-id the devices ask for")
	targetModel    = flag.String("target-model", "", "-target: the model the devices ask for")
	targetSerial   = flag.String("target-serial", "", "-target: devices ask for serial PREFIX<run>-<n> (a service that does not assign serials, such as Serial Vault, needs one); empty: the service assigns")
	targetModelA   = flag.String("target-model-assertion", "", "-target: file with the model assertion the devices send (default: one signed by a throwaway brand key, for a service that checks only its names)")
	targetConc     = flag.Int("target-concurrency", 8, "-target: concurrent clients, each on a kept-alive connection")
	targetRequests = flag.Int("target-requests", 2000, "-target: serial requests prepared and timed")
	targetDur      = flag.Duration("target-duration", 0, "-target: stop the timed phase after this long (0: when the prepared requests are used up)")
	targetWarmup   = flag.Int("target-warmup", 16, "-target: requests sent and not timed first (a service may load its key on the first signature)")
	targetPID      = flag.Int("target-pid", 0, "-target: the service's process id, for its CPU time per serial (0: not measured)")
)

func runTarget(primeCache string) error {
	u, err := url.Parse(*targetURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("-target %q: want http://HOST:PORT/PATH/ (plain HTTP, as the minimal client speaks)", *targetURL)
	}
	if *targetBrand == "" || *targetModel == "" {
		return errors.New("-target needs -target-brand and -target-model")
	}
	if *targetConc < 1 || *targetRequests < 1 || *targetWarmup < 0 {
		return errors.New("-target-concurrency and -target-requests must be positive, -target-warmup not negative")
	}
	addr := u.Host
	if u.Port() == "" {
		addr += ":80"
	}
	base := strings.TrimRight(u.Path, "/") + "/"
	model, err := targetModelAssertion()
	if err != nil {
		return err
	}
	kp := &keyPool{brand: *targetBrand, model: *targetModel, assertion: model, cache: primeCache}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}
	cl := &device.Client{URL: u.Scheme + "://" + u.Host + base, APIKey: *targetAPIKey, HTTP: hc}
	// A per-run part in the serials keeps a second run against the same
	// database from asking for serials it has already signed.
	run := time.Now().Unix()

	prepare := func(n int) ([][]byte, *answerCheck, error) {
		devs, err := kp.take(n)
		if err != nil {
			return nil, nil, err
		}
		ck := &answerCheck{brand: *targetBrand, model: *targetModel, want: make(map[string]string, n)}
		serial := func(i int) string { return "" }
		if first := kp.used - n; *targetSerial != "" {
			serial = func(i int) string { return fmt.Sprintf("%s%d-%d", *targetSerial, run, first+i) }
		}
		for i, dv := range devs {
			ck.want[dv.Key.PublicKey().ID()] = serial(i)
		}
		reqs, err := prepareSerials(cl, devs, addr, base+"serial", serial)
		return reqs, ck, err
	}

	fmt.Printf("keyrack-bench -target %s: brand %s, model %s, concurrency %d\n", *targetURL, *targetBrand, *targetModel, *targetConc)
	if *targetWarmup > 0 {
		reqs, ck, err := prepare(*targetWarmup)
		if err != nil {
			return fmt.Errorf("warm-up requests: %w", err)
		}
		w := replayCheck(addr, min(*targetConc, *targetWarmup), reqs, ck.check)
		fmt.Printf("warm-up: %d ok, %d failed, slowest %s ms\n", w.ok, w.other, ms(w.quantile(1)))
	}
	t0 := time.Now()
	reqs, ck, err := prepare(*targetRequests)
	if err != nil {
		return fmt.Errorf("preparing requests: %w", err)
	}
	fmt.Printf("%d requests prepared in %v (request-ids fetched, serial-requests signed by devices of their own)\n",
		len(reqs), time.Since(t0).Round(time.Millisecond))

	var until time.Time
	if *targetDur > 0 {
		until = time.Now().Add(*targetDur)
	}
	var s0 time.Duration
	if *targetPID > 0 {
		s0 = cpuTime(*targetPID)
	}
	c0 := cpuTime(os.Getpid())
	r := replayPool(addr, *targetConc, requestPool(reqs), until, ck.check)
	if r.ok > 0 {
		r.clientCPU = (cpuTime(os.Getpid()) - c0) / time.Duration(r.ok)
		if *targetPID > 0 {
			r.daemonCPU = (cpuTime(*targetPID) - s0) / time.Duration(r.ok)
		}
	}
	fmt.Printf("POST serial at concurrency %d: %d ok in %v, %.1f serials/s; %d 503s (sent again), %d failed\n",
		*targetConc, r.ok, r.elapsed.Round(time.Millisecond), r.perSecond(), r.busy, r.other)
	fmt.Printf("latency: p50 %s, p90 %s, p99 %s, max %s ms\n", ms(r.quantile(.5)), ms(r.quantile(.9)), ms(r.quantile(.99)), ms(r.quantile(1)))
	fmt.Printf("CPU per serial: load generator %s ms", ms(r.clientCPU))
	if *targetPID > 0 {
		fmt.Printf(", service process %d %s ms (its database's processes not counted)", *targetPID, ms(r.daemonCPU))
	}
	fmt.Println()
	fmt.Printf("\ntarget serial_per_s=%.1f p50_ms=%s p99_ms=%s failed=%d\n", r.perSecond(), ms(r.quantile(.5)), ms(r.quantile(.99)), r.other)
	if r.ok == 0 {
		return errors.New("no serial was issued")
	}
	return nil
}

// targetModelAssertion is the model assertion the devices send: the file
// given, or one signed by a throwaway brand key. Serial Vault compares only
// the model's brand and name with the request's; keyrackd checks the
// signature only when it holds the signing key, and a key it does not
// hold is looked up on every request.
func targetModelAssertion() ([]byte, error) {
	if *targetModelA != "" {
		return os.ReadFile(*targetModelA)
	}
	// 2048 bits: made in a fraction of a second, and nothing checks it.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	s, err := assertion.NewSigner(key, assertion.WithMinKeyBits(2048))
	if err != nil {
		return nil, err
	}
	m, err := s.SignModel(assertion.Model{BrandID: *targetBrand, Model: *targetModel, Architecture: "amd64",
		Gadget: "pc", Kernel: "pc-kernel", Timestamp: time.Now()})
	if err != nil {
		return nil, fmt.Errorf("model assertion: %w", err)
	}
	return m.Bytes, nil
}

// answerCheck decides whether a 200's answer is a serial assertion for one
// of the prepared requests: serialCheck, then the brand, model and serial
// asked for by the device whose key it binds, and no device answered
// twice. The service's signature is not verified (its key is not known
// here); what it signed is.
type answerCheck struct {
	brand, model string
	mu           sync.Mutex
	want         map[string]string // device key id -> serial asked for ("" any), deleted when answered
}

func (ck *answerCheck) check(ctype string, body []byte) error {
	if err := serialCheck(ctype, body); err != nil {
		return err
	}
	a, err := asserts.NewDecoder(bytes.NewReader(body)).Decode()
	if err != nil {
		return fmt.Errorf("answer does not decode: %v", err)
	}
	s, ok := a.(*asserts.Serial)
	if !ok {
		return fmt.Errorf("answer is a %s assertion", a.Type().Name)
	}
	if s.BrandID() != ck.brand || s.Model() != ck.model {
		return fmt.Errorf("serial for %s/%s, asked for %s/%s", s.BrandID(), s.Model(), ck.brand, ck.model)
	}
	id := s.DeviceKey().ID()
	ck.mu.Lock()
	defer ck.mu.Unlock()
	serial, ok := ck.want[id]
	if !ok {
		return fmt.Errorf("serial %s binds a device key no request of this run sent, or one already answered", s.Serial())
	}
	if serial != "" && s.Serial() != serial {
		return fmt.Errorf("serial %s, the device asked for %s", s.Serial(), serial)
	}
	delete(ck.want, id)
	return nil
}
