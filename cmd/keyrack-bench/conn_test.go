package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// TestRawConn: the load generator's client reads status, type and body
// over one kept-alive connection, opens a new one when the server closes
// it, and refuses answers it cannot frame.
func TestRawConn(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("Content-Type", "text/x-test")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)+len(r.Header.Get("api-key"))))
			w.WriteHeader(201)
			w.Write(append([]byte(r.Header.Get("api-key")), body...))
		case "/close":
			w.Header().Set("Connection", "close")
			w.Header().Set("Content-Length", "2")
			w.WriteHeader(503)
			w.Write([]byte("no"))
		case "/chunked":
			w.WriteHeader(200)
			w.Write(bytes.Repeat([]byte("x"), 10000))
		}
	}))
	srv.Start()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	rc := &rawConn{addr: addr}
	defer rc.close()

	for i := 0; i < 3; i++ {
		status, ctype, body, err := rc.do(rawRequest(addr, "/echo", "k1", "text/plain", []byte("hello")))
		if err != nil || status != 201 || ctype != "text/x-test" || string(body) != "k1hello" {
			t.Fatalf("echo %d: %d %q %q %v", i, status, ctype, body, err)
		}
	}
	first := rc.c
	status, _, body, err := rc.do(rawRequest(addr, "/close", "k", "text/plain", nil))
	if err != nil || status != 503 || string(body) != "no" {
		t.Fatalf("close: %d %q %v", status, body, err)
	}
	if rc.c != nil {
		t.Error("connection kept after Connection: close")
	}
	if status, _, _, err := rc.do(rawRequest(addr, "/echo", "k", "text/plain", nil)); err != nil || status != 201 {
		t.Fatalf("after a close: %d %v", status, err)
	}
	if rc.c == first {
		t.Error("no new connection after the server closed one")
	}
	if _, _, _, err := rc.do(rawRequest(addr, "/chunked", "k", "text/plain", nil)); err == nil || !strings.Contains(err.Error(), "chunked") {
		t.Errorf("chunked answer: %v", err)
	}
}
