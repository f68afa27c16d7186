package main

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
)

// fakeService is a device service at /dv/v1/ that, like Serial Vault,
// signs the serial the device asks for and refuses a request-id it did not
// give or has seen used.
type fakeService struct {
	signer *assertion.Signer
	apiKey string
	mu     sync.Mutex
	rids   map[string]bool
	n      int
}

func (f *fakeService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("api-key") != f.apiKey {
		http.Error(w, "api-key", http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/dv/v1/request-id":
		f.mu.Lock()
		f.n++
		rid := fmt.Sprintf("rid-%d", f.n)
		f.rids[rid] = true
		f.mu.Unlock()
		fmt.Fprintf(w, `{"request-id":%q}`, rid)
	case "/dv/v1/serial":
		a, err := asserts.NewDecoder(r.Body).Decode()
		sr, ok := a.(*asserts.SerialRequest)
		if err != nil || !ok {
			http.Error(w, fmt.Sprint("not a serial-request: ", err), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		fresh := f.rids[sr.RequestID()]
		delete(f.rids, sr.RequestID())
		f.mu.Unlock()
		if !fresh || sr.Serial() == "" {
			http.Error(w, "request-id or serial", http.StatusBadRequest)
			return
		}
		s, err := f.signer.Serial(assertion.Serial{BrandID: sr.BrandID(), Model: sr.Model(), Serial: sr.Serial(), DeviceKey: sr.DeviceKey(), Timestamp: time.Now()})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", asserts.MediaType)
		w.Write(s.Bytes)
	default:
		http.NotFound(w, r)
	}
}

func testSigner(t *testing.T) *assertion.Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s, err := assertion.NewSigner(k, assertion.WithMinKeyBits(2048))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTarget: -target prepares requests against a service at any path,
// each device asking for a serial of its own, and counts what it answers.
func TestTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("makes 2048-bit primes")
	}
	f := &fakeService{signer: testSigner(t), apiKey: "k-123", rids: map[string]bool{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	for p, v := range map[*string]string{targetURL: srv.URL + "/dv/v1/", targetAPIKey: "k-123", targetBrand: "b1", targetModel: "m1", targetSerial: "m1-"} {
		old := *p
		*p = v
		defer func() { *p = old }()
	}
	for p, v := range map[*int]int{targetRequests: 6, targetWarmup: 2, targetConc: 3} {
		old := *p
		*p = v
		defer func() { *p = old }()
	}
	if err := runTarget(""); err != nil {
		t.Fatal(err)
	}
	if f.n != 8 || len(f.rids) != 0 {
		t.Errorf("%d request-ids given, %d unused; want 8 and 0", f.n, len(f.rids))
	}
}

// TestAnswerCheck: an answer counts only as a serial of the brand and
// model asked for, binding a device key of the run and the serial that
// device asked for, once.
func TestAnswerCheck(t *testing.T) {
	s := testSigner(t)
	dk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub := asserts.RSAPublicKey(&dk.PublicKey)
	serial := func(brand, model, sn string) []byte {
		a, err := s.Serial(assertion.Serial{BrandID: brand, Model: model, Serial: sn, DeviceKey: pub, Timestamp: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return a.Bytes
	}
	ck := &answerCheck{brand: "b1", model: "m1", want: map[string]string{pub.ID(): "m1-7"}}
	for _, bad := range []struct {
		name  string
		ctype string
		body  []byte
	}{
		{"media type", "text/plain", serial("b1", "m1", "m1-7")},
		{"brand", asserts.MediaType, serial("b2", "m1", "m1-7")},
		{"model", asserts.MediaType, serial("b1", "m2", "m1-7")},
		{"serial", asserts.MediaType, serial("b1", "m1", "m1-8")},
	} {
		if err := ck.check(bad.ctype, bad.body); err == nil {
			t.Errorf("%s: accepted", bad.name)
		}
	}
	if err := ck.check(asserts.MediaType, serial("b1", "m1", "m1-7")); err != nil {
		t.Errorf("the serial asked for: %v", err)
	}
	if err := ck.check(asserts.MediaType, serial("b1", "m1", "m1-7")); err == nil {
		t.Error("the same device answered twice: accepted")
	}
}
