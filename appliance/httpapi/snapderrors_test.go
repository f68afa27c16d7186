package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/snapcore/snapd/asserts"
)

// snapdMessage reads an error answer the way snapd's device manager does
// (retryBadStatus in overlord/devicestate): only with Content-Type exactly
// application/json, only a top-level "message" or error_list[0].message.
func snapdMessage(resp *http.Response, body []byte) (string, bool) {
	if resp.Header.Get("Content-Type") != "application/json" {
		return "", false
	}
	var v struct {
		Message   string `json:"message"`
		ErrorList []struct {
			Message string `json:"message"`
		} `json:"error_list"`
	}
	if json.Unmarshal(body, &v) != nil {
		return "", false
	}
	if v.Message != "" {
		return v.Message, true
	}
	if len(v.ErrorList) > 0 && v.ErrorList[0].Message != "" {
		return v.ErrorList[0].Message, true
	}
	return "", false
}

// TestErrorsSnapdShows: every error a device or a client can meet, from
// the API's refusals to the router's and the body and header limits,
// reaches snapd's user as a message, with its code.
func TestErrorsSnapdShows(t *testing.T) {
	e := newDeviceEnv(t, false)
	addr, stop := e.serve() // the real server, with its limits
	defer stop()
	base := "http://" + addr
	key := e.apiKeys["line-a"]
	model := e.modelAssertion("line-1")
	type req struct {
		name, method, path, ctype string
		body                      []byte
		hdr                       map[string]string
		status                    int
	}
	cases := []req{
		{"bad stream", "POST", "/v1/serial", asserts.MediaType, []byte("x"), map[string]string{"api-key": key}, 400},
		{"no api key", "POST", "/v1/request-id", "", nil, nil, 401},
		{"an officer session on a device endpoint", "POST", "/v1/request-id", "", nil, map[string]string{"api-key": e.creds["alice"]}, 403},
		{"unknown route", "GET", "/v1/no-such-thing", "", nil, nil, 404},
		{"wrong method", "DELETE", "/v1/health", "", nil, nil, 405},
		{"used request-id", "POST", "/v1/serial", asserts.MediaType, nil, map[string]string{"api-key": key}, 409},
		{"body too large", "POST", "/v1/serial", asserts.MediaType, bytes.Repeat([]byte("x"), 2<<20), map[string]string{"api-key": key}, 413},
		{"wrong media type", "POST", "/v1/serial", "text/plain", []byte("x"), map[string]string{"api-key": key}, 415},
		{"headers too large", "GET", "/v1/health", "", nil, map[string]string{"X-Padding": strings.Repeat("a", 70<<10)}, 431},
	}
	// A used request-id: register once, then send the same stream again.
	used := stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", "U-1", nil), model)
	if code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, used, nil); code != 200 {
		t.Fatalf("first registration: %d %s", code, raw)
	}
	cases[5].body = used
	check := func(c req) {
		t.Helper()
		r, _ := http.NewRequest(c.method, base+c.path, bytes.NewReader(c.body))
		if c.ctype != "" {
			r.Header.Set("Content-Type", c.ctype)
		}
		for k, v := range c.hdr {
			r.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		msg, ok := snapdMessage(resp, buf.Bytes())
		var code struct {
			Code string `json:"code"`
		}
		json.Unmarshal(buf.Bytes(), &code)
		if resp.StatusCode != c.status || !ok || code.Code == "" {
			t.Errorf("%s: %d %q, snapd would show %q (shown: %v), code %q", c.name, resp.StatusCode, resp.Header.Get("Content-Type"), msg, ok, code.Code)
		}
	}
	for _, c := range cases {
		check(c)
	}
	// Overload: every place in the signing queue taken.
	_, places := e.srv.app.SigningQueue()
	var releases []func()
	for i := 0; i < places; i++ {
		_, release, err := e.srv.app.Admit(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
	}
	check(req{"overloaded", "POST", "/v1/serial", asserts.MediaType, []byte("x"), map[string]string{"api-key": key}, 503})
	for _, r := range releases {
		r()
	}
	// Throttled, last: ten bad keys from this address.
	for i := 0; i < 10; i++ {
		e.call("", "POST", "/v1/request-id", "", nil, map[string]string{"api-key": "krk_c_line-a_" + strings.Repeat("0", 64)})
	}
	check(req{"throttled", "POST", "/v1/request-id", "", nil, map[string]string{"api-key": key}, 429})
}
