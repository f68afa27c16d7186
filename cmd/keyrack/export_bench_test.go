package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance/wire"
)

// BenchmarkExportSigningLog exports a signing log of 10,000 and of
// 100,000 rows, seeded straight into the store, through a real server
// over loopback: GET /v1/signing-log?format=csv read to the end, then
// keyrack log -csv (the CLI's own run, login included). Server and CLI
// share this process, so its peak heap (sampled every millisecond) and
// peak RSS (VmHWM, reset before each export) cover both ends. Flat memory
// shows as the same peaks at 10x the rows. make bench runs it once;
// make test never (a benchmark).
func BenchmarkExportSigningLog(b *testing.B) {
	for _, rows := range []int{10_000, 100_000} {
		b.Run(strconv.Itoa(rows), func(b *testing.B) {
			e := newEnv(b)
			e.seedLog(rows)
			tok := e.apiLogin("alice")
			b.ResetTimer()
			for range b.N {
				var n int64
				took, heap, rss := measure(func() {
					req, _ := http.NewRequest("GET", e.url+"/v1/signing-log?format=csv", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					defer resp.Body.Close()
					if n, err = io.Copy(io.Discard, resp.Body); err != nil || resp.Trailer.Get(wire.RowsTrailer) != strconv.Itoa(rows) {
						b.Fatalf("GET: %v, trailer %q", err, resp.Trailer.Get(wire.RowsTrailer))
					}
				})
				b.Logf("%7d rows  GET /v1/signing-log?format=csv  %6.0f ms  %5.1f MiB CSV  peak heap %5.1f MiB  peak RSS %5.1f MiB",
					rows, ms(took), mib(n), mib(heap), mib(rss))
				b.ReportMetric(mib(heap), "api-peak-heap-MiB")
				var errb bytes.Buffer
				var out countingWriter
				took, heap, rss = measure(func() {
					if code := runWith([]string{"-url", e.url, "-key", e.files["alice"], "log", "-csv"}, nil, &out, &errb); code != 0 {
						b.Fatalf("keyrack log -csv: %d %s", code, errb.String())
					}
				})
				if out.lines != int64(rows)+1 {
					b.Fatalf("keyrack log -csv wrote %d lines for %d rows", out.lines, rows)
				}
				b.Logf("%7d rows  keyrack log -csv                 %6.0f ms  %5.1f MiB CSV  peak heap %5.1f MiB  peak RSS %5.1f MiB",
					rows, ms(took), mib(out.n), mib(heap), mib(rss))
				b.ReportMetric(mib(heap), "cli-peak-heap-MiB")
				b.ReportMetric(mib(rss), "cli-peak-rss-MiB")
			}
		})
	}
}

// measure runs fn after a GC that gives freed memory back to the system
// (what seeding the store left would otherwise count) and a reset of the
// process's peak RSS, and
// returns how long it took, the peak of live heap objects sampled every
// millisecond meanwhile, and the peak RSS (VmHWM; 0 where the kernel has
// no /proc/self/clear_refs).
func measure(fn func()) (time.Duration, uint64, uint64) {
	debug.FreeOSMemory()
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM to the current RSS
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			mu.Lock()
			peak = max(peak, sample[0].Value.Uint64())
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	start := time.Now()
	fn()
	took := time.Since(start)
	close(stop)
	<-done
	return took, peak, vmHWM()
}

// vmHWM is the process's peak RSS in bytes, from /proc/self/status.
func vmHWM() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb uint64
			fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb << 10
		}
	}
	return 0
}

// countingWriter discards what it is given, counting bytes and lines.
type countingWriter struct{ n, lines int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	w.lines += int64(bytes.Count(p, []byte{'\n'}))
	return len(p), nil
}

func mib(n any) float64 {
	switch v := n.(type) {
	case int64:
		return float64(v) / (1 << 20)
	case uint64:
		return float64(v) / (1 << 20)
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
