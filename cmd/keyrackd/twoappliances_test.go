package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/device"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/softhsm"
)

// TestTwoAppliancesOnePostgres runs two keyrackd processes on one
// PostgreSQL database and one token (two appliances on a network HSM): a
// request-id issued by one is consumed through the other, and concurrent
// requests for one serial through both give exactly one serial.
func TestTwoAppliancesOnePostgres(t *testing.T) {
	dsn := postgresDSN(t)
	work := t.TempDir()
	tok, err := softhsm.Create(filepath.Join(work, "token"), "shared-hsm")
	if err != nil {
		t.Fatal(err)
	}
	// Demo data in the shared database, through the appliance itself.
	addrA, addrB := freeAddr(t), freeAddr(t)
	cfgA, cfgB := writePostgresConfig(t, work, "a", addrA, dsn, tok), writePostgresConfig(t, work, "b", addrB, dsn, tok)
	seedDemo(t, cfgA, dsn, work)
	startWithConfig(t, cfgA, addrA, tok.Env())
	startWithConfig(t, cfgB, addrB, tok.Env())

	apiKey, _ := os.ReadFile(filepath.Join(work, "api-key"))
	a := &device.Client{URL: "http://" + addrA + "/v1/", APIKey: strings.TrimSpace(string(apiKey))}
	b := &device.Client{URL: "http://" + addrB + "/v1/", APIKey: a.APIKey}
	signingKey, _ := os.ReadFile(filepath.Join(work, "signing-key"))
	signer := &device.Client{URL: a.URL, APIKey: strings.TrimSpace(string(signingKey))}
	model, err := signer.SignModel(context.Background(), appliance.DemoModel)
	if err != nil {
		t.Fatal(err)
	}

	// A request-id from A, used at B.
	dev, err := device.New(appliance.DemoBrand, appliance.DemoModel, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dev.ModelAssertion = model
	rid, err := a.RequestID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := dev.SerialRequest(rid, "", nil)
	if _, err := b.PostSerial(context.Background(), dev.Stream(req)); err != nil {
		t.Fatalf("request-id from A used at B: %v", err)
	}
	// ... and used once only, at either.
	for _, c := range []*device.Client{a, b} {
		if st, _ := c.PostSerialStatus(context.Background(), dev.Stream(req)); st != http.StatusConflict {
			t.Fatalf("replayed request-id: %d", st)
		}
	}

	// One device key asks through both appliances at once, ten times (a
	// device retrying while its first answers are lost): the model
	// assigns serials, and the key gets exactly one, the same in every
	// answer.
	one, err := device.New(appliance.DemoBrand, appliance.DemoModel, 2048)
	if err != nil {
		t.Fatal(err)
	}
	one.ModelAssertion = model
	const tries = 10
	got := make([]string, tries)
	var wgOne sync.WaitGroup
	for i := 0; i < tries; i++ {
		c := []*device.Client{a, b}[i%2]
		wgOne.Add(1)
		go func(i int) {
			defer wgOne.Done()
			for attempt := 0; attempt < 200; attempt++ {
				rid, err := c.RequestID(context.Background())
				if err != nil {
					got[i] = "request-id: " + err.Error()
					return
				}
				req, _ := one.SerialRequest(rid, "", nil)
				as, err := c.PostSerial(context.Background(), one.Stream(req))
				var de *device.Error
				if errorAs(err, &de) && de.Status == http.StatusServiceUnavailable {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				if err != nil {
					got[i] = "error: " + err.Error()
					return
				}
				got[i] = as[0].HeaderString("serial")
				return
			}
		}(i)
	}
	wgOne.Wait()
	for _, g := range got {
		if g != got[0] || !strings.HasPrefix(g, "dev-") {
			t.Fatalf("one device key through two appliances got %q", got)
		}
	}
	var rows int
	if db, err := store.OpenPostgres(context.Background(), dsn); err != nil {
		t.Fatal(err)
	} else {
		db.View(context.Background(), func(tx *store.Tx) error {
			log, err := tx.SigningLog(store.LogFilter{Serial: got[0]})
			rows = len(log)
			return err
		})
		db.Close()
	}
	if rows != 1 {
		t.Fatalf("serial %s signed %d times for one device key", got[0], rows)
	}

	// The model now takes serials from requests (a ceremony through A).
	if code, out := demoOfficer(t, work, addrA).ceremony("POST", "/v1/models", map[string]any{"brand": appliance.DemoBrand, "model": appliance.DemoModel,
		"keys": map[string]string{"serial": appliance.DemoKey, "model": appliance.DemoKey}, "serial-source": "request"}); code != 200 {
		t.Fatalf("model binding: %d %v", code, out)
	}

	// Ten devices ask for serial TWIN-1 at once, half through each.
	const n = 10
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		d, err := device.New(appliance.DemoBrand, appliance.DemoModel, 2048)
		if err != nil {
			t.Fatal(err)
		}
		d.ModelAssertion = model
		c := []*device.Client{a, b}[i%2]
		rid, err := c.RequestID(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		req, _ := d.SerialRequest(rid, "TWIN-1", nil)
		wg.Add(1)
		go func(i int, s []byte) {
			defer wg.Done()
			for {
				codes[i], _ = c.PostSerialStatus(context.Background(), s)
				if codes[i] != http.StatusServiceUnavailable {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}(i, d.Stream(req))
	}
	wg.Wait()
	ok, conflict := 0, 0
	for _, c := range codes {
		switch c {
		case 200:
			ok++
		case 409:
			conflict++
		}
	}
	if ok != 1 || conflict != n-1 {
		t.Fatalf("one serial through two appliances: %d issued, %d conflicts (%v)", ok, conflict, codes)
	}
	db, err := store.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if c, err := db.VerifyAudit(context.Background()); err != nil {
		t.Fatalf("audit chain written by two appliances: %d then %v", c, err)
	}
}
