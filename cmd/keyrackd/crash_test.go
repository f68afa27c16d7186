package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/device"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

// TestCrashRecovery runs keyrackd under load from concurrent devices and
// kills it with SIGKILL at random moments, several times. After each
// restart: every serial a device received is recorded (serials table and
// signing log) and in the audit chain; no request-id is accepted twice;
// the audit chain verifies; no serial stays half-reserved.
func TestCrashRecovery(t *testing.T) {
	work := t.TempDir()
	bin := keyrackdBinary(t)
	devDir := filepath.Join(work, "dev")
	addr := freeAddr(t)

	var mu sync.Mutex
	var received []asserts.Assertion
	var usedStreams [][]byte // streams whose request-id was accepted

	var devs []*device.Device
	for i := 0; i < 4; i++ {
		d, err := device.New(appliance.DemoBrand, appliance.DemoModel, 2048)
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	for round := 0; round < 4; round++ {
		d := startDaemon(t, bin, devDir, addr)
		apiKey, err := os.ReadFile(filepath.Join(devDir, "api-key"))
		if err != nil {
			t.Fatal(err)
		}
		cl := &device.Client{URL: "http://" + addr + "/v1/", APIKey: strings.TrimSpace(string(apiKey))}
		signingKey, err := os.ReadFile(filepath.Join(devDir, "signing-key"))
		if err != nil {
			t.Fatal(err)
		}
		signer := &device.Client{URL: cl.URL, APIKey: strings.TrimSpace(string(signingKey))}
		model, err := signer.SignModel(context.Background(), appliance.DemoModel)
		if err != nil {
			t.Fatal(err)
		}
		// Every stream that got a serial in an earlier round must be
		// refused now: its request-id was used.
		mu.Lock()
		replays := usedStreams
		mu.Unlock()
		for _, s := range replays {
			if status, _ := cl.PostSerialStatus(context.Background(), s); status == 200 {
				t.Fatalf("round %d: a request-id was accepted twice", round)
			}
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 6; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				dv := devs[w%len(devs)]
				dv.ModelAssertion = model
				for {
					select {
					case <-stop:
						return
					default:
					}
					rid, err := cl.RequestID(context.Background())
					if err != nil {
						return // the daemon died
					}
					req, err := dv.SerialRequest(rid, "", nil)
					if err != nil {
						t.Error(err)
						return
					}
					s := dv.Stream(req)
					as, err := cl.PostSerial(context.Background(), s)
					if err != nil {
						var de *device.Error
						if strings.Contains(err.Error(), "connection") || strings.Contains(err.Error(), "EOF") {
							return
						}
						if !(errorAs(err, &de) && de.Status == 503) {
							t.Errorf("serial: %v", err)
						}
						continue
					}
					mu.Lock()
					received = append(received, as[0])
					usedStreams = append(usedStreams, s)
					mu.Unlock()
				}
			}(w)
		}
		n, _ := rand.Int(rand.Reader, big.NewInt(1500))
		time.Sleep(300*time.Millisecond + time.Duration(n.Int64())*time.Millisecond)
		d.cmd.Process.Kill() // SIGKILL: no drain, no cleanup
		d.cmd.Wait()
		close(stop)
		wg.Wait()
	}
	// A last clean start runs the start-up repair; then look at the store.
	d := startDaemon(t, bin, devDir, addr)
	d.stop(t)

	ctx := context.Background()
	dbPath := filepath.Join(devDir, "state", "keyrack.db")
	db, err := store.OpenSQLiteReadOnly(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n, err := db.VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain after crashes: %d events then %v", n, err)
	}
	if len(received) == 0 {
		t.Fatal("no serial was issued at all")
	}
	raw, err := sql.Open(store.SQLiteDriver, "file:"+dbPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var stale int
	raw.QueryRow(`SELECT count(*) FROM serials WHERE state = 'signing'`).Scan(&stale)
	if stale != 0 {
		t.Fatalf("%d serials left half-reserved after the restart", stale)
	}
	for _, a := range received {
		s := a.(*asserts.Serial)
		var state string
		var stored []byte
		if err := raw.QueryRow(`SELECT state, assertion FROM serials WHERE brand = $1 AND model = $2 AND serial = $3`,
			s.BrandID(), s.Model(), s.Serial()).Scan(&state, &stored); err != nil {
			t.Fatalf("serial %s a device received is not recorded: %v", s.Serial(), err)
		}
		if state != "issued" || !strings.HasPrefix(string(stored), "type: serial") {
			t.Fatalf("serial %s recorded as %s", s.Serial(), state)
		}
		var logged int
		raw.QueryRow(`SELECT count(*) FROM signing_log WHERE type = 'serial' AND serial = $1`, s.Serial()).Scan(&logged)
		var audited int
		raw.QueryRow(`SELECT count(*) FROM audit WHERE action = 'serial.sign' AND result = 'ok' AND subject = $1`,
			s.BrandID()+"/"+s.Model()+"/"+s.Serial()).Scan(&audited)
		if logged != 1 || audited != 1 {
			t.Fatalf("serial %s: %d signing-log rows, %d audit events", s.Serial(), logged, audited)
		}
	}
	// The demo model assigns serials: each device key kept the one
	// serial it was first given, through every retry and every kill.
	byKey := map[string]map[string]bool{}
	for _, a := range received {
		s := a.(*asserts.Serial)
		if byKey[s.DeviceKey().ID()] == nil {
			byKey[s.DeviceKey().ID()] = map[string]bool{}
		}
		byKey[s.DeviceKey().ID()][s.Serial()] = true
	}
	for k, serials := range byKey {
		if len(serials) != 1 {
			t.Errorf("device key %s was given %d serials across restarts: %v", k, len(serials), serials)
		}
	}
	var pending int
	raw.QueryRow(`SELECT count(*) FROM keys WHERE state = 'pending'`).Scan(&pending)
	if pending != 0 {
		t.Fatalf("%d key records left pending", pending)
	}
	// No key object without its record, no record without its object.
	tok, err := softhsm.Load(filepath.Join(devDir, "softhsm"), "keyrack-dev")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := hsm.Open(tok.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	objs, err := mod.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]bool{}
	rows, err := raw.Query(`SELECT hex(cka_id), state FROM keys`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, state string
		rows.Scan(&id, &state)
		if state == "active" || state == "disabled" {
			records[strings.ToLower(id)] = true
		}
	}
	rows.Close()
	var importKeys int
	raw.QueryRow(`SELECT count(*) FROM settings WHERE name LIKE 'import_key_cka_id/%'`).Scan(&importKeys)
	// The audit key is the appliance's own, recorded as a setting.
	var auditKeyID string
	raw.QueryRow(`SELECT lower(value) FROM settings WHERE name LIKE 'audit_key_cka_id/%'`).Scan(&auditKeyID)
	records[auditKeyID] = true
	inToken := map[string]bool{}
	for _, o := range objs {
		id := hex.EncodeToString(o.ID)
		inToken[id] = true
		if !records[id] && !o.Unwrap {
			t.Errorf("token key %q (%s) has no record", o.Label, id)
		}
	}
	for id := range records {
		if !inToken[id] {
			t.Errorf("key record %s has no token object", id)
		}
	}
	if importKeys != 1 {
		t.Errorf("%d import keys recorded for the one token", importKeys)
	}
	t.Logf("%d serials received across 4 kills by %d device keys, one serial each; all recorded, logged and audited", len(received), len(byKey))
}

func errorAs(err error, target **device.Error) bool {
	for err != nil {
		if de, ok := err.(*device.Error); ok {
			*target = de
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}
