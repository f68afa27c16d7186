package httpapi

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance"
)

// TestSlowClients opens 50 connections that trickle their headers or
// their body: each is cut off at the configured timeout, and normal
// requests are served meanwhile.
func TestSlowClients(t *testing.T) {
	e := newDeviceEnv(t, false)
	e.srv.cfg.HTTP.ReadHeaderTimeout = appliance.Duration(time.Second)
	e.srv.cfg.HTTP.ReadTimeout = appliance.Duration(2 * time.Second)
	addr, stop := e.serve()

	var wg sync.WaitGroup
	cutAfter := make([]time.Duration, 50)
	for i := range cutAfter {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			start := time.Now()
			if i%2 == 0 {
				fmt.Fprintf(c, "POST /v1/serial HTTP/1.1\r\nHost: x\r\n") // headers never finish
			} else {
				fmt.Fprintf(c, "POST /v1/serial HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\napi-key: %s\r\nContent-Type: application/x.ubuntu.assertion\r\n\r\n", e.apiKeys["line-a"])
			}
			buf := make([]byte, 1)
			for time.Since(start) < 10*time.Second {
				if _, err := c.Write([]byte("a")); err != nil {
					break
				}
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := c.Read(buf); err != nil && err != io.EOF {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						continue
					}
					break
				} else if err == io.EOF {
					break
				}
			}
			cutAfter[i] = time.Since(start)
		}(i)
	}
	// Meanwhile, normal requests are served promptly.
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < 5; i++ {
		start := time.Now()
		resp, err := http.Get("http://" + addr + "/v1/health")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("health during the slow clients: %v", err)
		}
		resp.Body.Close()
		if took := time.Since(start); took > time.Second {
			t.Fatalf("health took %v during the slow clients", took)
		}
	}
	wg.Wait()
	for i, d := range cutAfter {
		if d > 5*time.Second {
			t.Errorf("slow client %d held its connection for %v", i, d)
		}
	}
	stop()
}
