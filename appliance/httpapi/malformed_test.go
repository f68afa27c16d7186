package httpapi

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"math/big"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"
)

// TestMalformedRequests sends thousands of malformed requests to a real
// server (with its header and body limits) and sees only 4xx answers, no
// 5xx, no crash, and bounded memory.
func TestMalformedRequests(t *testing.T) {
	e := newDeviceEnv(t, false)
	addr, stop := e.serve()
	base := "http://" + addr
	model := e.modelAssertion("line-1")
	valid := stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", "M-1", nil), model)
	key := e.apiKeys["line-a"]
	// Use the valid stream once, so that every variant of it below is
	// malformed or a replay of a used request-id.
	if code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, valid, nil); code != 200 {
		t.Fatalf("the valid stream: %d %s", code, raw)
	}

	rnd := func(n int64) int64 { v, _ := rand.Int(rand.Reader, big.NewInt(n)); return v.Int64() }
	random := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }
	type req struct {
		method, path, ctype string
		body                []byte
		hdr                 map[string]string
	}
	kinds := []func() req{
		func() req { return req{"POST", "/v1/serial", asserts.MediaType, random(int(rnd(8192))), nil} },
		func() req { return req{"POST", "/v1/serial", asserts.MediaType, valid[:rnd(int64(len(valid)))], nil} },
		func() req {
			b := append([]byte{}, valid...)
			b[rnd(int64(len(b)))] ^= byte(1 + rnd(255))
			return req{"POST", "/v1/serial", asserts.MediaType, b, nil}
		},
		func() req { return req{"POST", "/v1/serial", "application/json", valid, nil} },
		func() req { return req{"POST", "/v1/serial", "", valid, nil} },
		func() req {
			return req{"POST", "/v1/system-user", "application/json", []byte("{\"email\": \"\xff\xfe\"}"), nil}
		},
		func() req { return req{"POST", "/v1/system-user", "application/json", random(int(rnd(512))), nil} },
		func() req {
			return req{"POST", "/v1/model", "application/json", []byte(`{"headers": {"model": 7}}`), nil}
		},
		func() req {
			return req{"POST", "/v1/preseed", "application/json", []byte(`{"model": "line-1", "system-label": "BAD LABEL"}`), nil}
		},
		func() req { return req{"POST", "/v1/serial", asserts.MediaType, bytes.Repeat([]byte("x"), 2<<20), nil} },
		func() req {
			return req{"POST", "/v1/request-id", "", nil, map[string]string{"X-Huge": strings.Repeat("h", 100<<10)}}
		},
		func() req {
			return req{"POST", "/v1/request-id", "", nil, map[string]string{"api-key": "krk_c_line-a_" + strings.Repeat("0", 64)}}
		},
		func() req { return req{"GET", "/v1/" + hex.EncodeToString(random(8)), "", nil, nil} },
		func() req { return req{"DELETE", "/v1/serial", "", nil, nil} },
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc

	const total = 3000
	counts := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	jobs := make(chan req)
	client := &http.Client{Timeout: 30 * time.Second}
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range jobs {
				hr, err := http.NewRequest(r.method, base+r.path, bytes.NewReader(r.body))
				if err != nil {
					t.Error(err)
					continue
				}
				if r.ctype != "" {
					hr.Header.Set("Content-Type", r.ctype)
				}
				if _, ok := r.hdr["api-key"]; !ok {
					// Each endpoint with its kind of client, so that the
					// malformed content is what is refused.
					hr.Header.Set("api-key", key)
					if r.path != "/v1/serial" && r.path != "/v1/request-id" {
						hr.Header.Set("api-key", e.apiKeys["sign-a"])
					}
				}
				for k, v := range r.hdr {
					hr.Header.Set(k, v)
				}
				resp, err := client.Do(hr)
				status := 0
				if err == nil {
					status = resp.StatusCode
					resp.Body.Close()
				}
				mu.Lock()
				counts[status]++
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < total; i++ {
		jobs <- kinds[i%len(kinds)]()
	}
	close(jobs)
	wg.Wait()

	runtime.GC()
	runtime.ReadMemStats(&ms)
	growth := int64(ms.HeapAlloc) - int64(before)
	t.Logf("statuses %v; heap growth %.1f MiB", counts, float64(growth)/(1<<20))
	for status, n := range counts {
		if status < 400 || status > 499 {
			t.Errorf("%d answers with status %d", n, status)
		}
	}
	if growth > 64<<20 {
		t.Errorf("heap grew by %d bytes", growth)
	}
	// Still serving.
	resp, err := http.Get(base + "/v1/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health after the storm: %v", err)
	}
	resp.Body.Close()
	stop()
}
