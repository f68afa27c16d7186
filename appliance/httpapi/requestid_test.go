package httpapi

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/store"
)

func (e *ceremonyEnv) storedRequestIDs() int64 {
	e.t.Helper()
	var n int64
	if err := e.db.View(context.Background(), func(tx *store.Tx) (err error) { n, err = tx.CountNonces(); return err }); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// TestRequestIDFloodStoresNothing plays the outsider with the public
// device-service key (it is in every gadget image) asking for request-ids
// as fast as it can: the store must not grow with them, and the real
// devices of the line keep registering meanwhile. With request-ids stored
// when issued, the store held one row per request.
func TestRequestIDFloodStoresNothing(t *testing.T) {
	e := newDeviceEnv(t, false)
	model := e.modelAssertion("line-9")
	const flood, devices = 4000, 10
	before := e.storedRequestIDs()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var floodErr error
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < flood/4; i++ {
				req, _ := http.NewRequest("POST", e.ts.URL+"/v1/request-id", nil)
				req.Header.Set("api-key", e.apiKeys["line-a"])
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					mu.Lock()
					floodErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	serials := map[string]bool{}
	for i := 0; i < devices; i++ {
		code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType,
			stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-9", "", nil), model), nil)
		if code != 200 {
			t.Fatalf("device %d during the flood: %d %s", i, code, raw)
		}
		serials[decodeStream(t, raw)[0].(*asserts.Serial).Serial()] = true
	}
	wg.Wait()
	if floodErr != nil {
		t.Fatalf("flood: %v", floodErr)
	}
	if len(serials) != devices {
		t.Fatalf("%d devices got %d serials", devices, len(serials))
	}
	// Only the request-ids the devices used are held, not the flood's.
	if n := e.storedRequestIDs() - before; n != devices {
		t.Fatalf("the store holds %d request-ids after %d issued and %d used, want %d", n, flood+2*devices, devices, devices)
	}
}

// TestForgedRequestIDs: a request-id is only good from this appliance, for
// the client it was issued to, unaltered; a used one is refused even after
// its row would have been purged only past its expiry.
func TestForgedRequestIDs(t *testing.T) {
	e := newDeviceEnv(t, false)
	model := e.modelAssertion("line-9")
	good := e.requestID("line-a")
	raw, err := base64.RawURLEncoding.DecodeString(good)
	if err != nil {
		t.Fatalf("request-id %q: %v", good, err)
	}
	later := append([]byte{}, raw...)
	later[2]++ // a later expiry
	random := append([]byte{}, raw...)
	random[10] ^= 1
	for name, rid := range map[string]string{
		"made up":        strings.Repeat("0", 32),
		"later expiry":   base64.RawURLEncoding.EncodeToString(later),
		"other random":   base64.RawURLEncoding.EncodeToString(random),
		"other client's": e.requestID("line-b"),
		"truncated":      good[:len(good)-2],
		"not base64":     good[:20] + "!!" + good[22:],
	} {
		code, _, body := e.call("line-a", "POST", "/v1/serial", asserts.MediaType,
			stream(newDevice(t).serialRequest(t, rid, "line-9", "", nil), model), nil)
		if code != http.StatusBadRequest || errCodeOf(body) != "invalid-request-id" {
			t.Errorf("%s request-id: %d %s", name, code, body)
		}
	}
	dev := newDevice(t)
	if code, _, body := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(dev.serialRequest(t, good, "line-9", "", nil), model), nil); code != 200 {
		t.Fatalf("the good request-id: %d %s", code, body)
	}
	if code, _, body := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, good, "line-9", "", nil), model), nil); code != http.StatusConflict || errCodeOf(body) != "request-id-used" {
		t.Fatalf("the good request-id again: %d %s", code, body)
	}
	e.srv.app.PurgeRequestIDs(context.Background())
	if code, _, body := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, good, "line-9", "", nil), model), nil); code != http.StatusConflict {
		t.Fatalf("the good request-id after a purge: %d %s", code, body)
	}
}
