package store

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSerialWrites measures the store's share of issuing one serial:
// the reservation transaction before the token signs (unsynced, as the
// appliance runs it) and the record,
// signing-log and audit transaction after it, from 1 and 4 concurrent
// requests (the appliance admits 2 sessions + 2 queued by default). It
// reports CPU time and commits per serial; the token signature this sits
// next to costs about 4 ms of CPU. It runs once per SQLite driver
// (sqliteDrivers: modernc's pure Go one in production, the cgo one kept
// for this comparison), so that one run compares them side by side. On
// 2 shared cores (issue 20), 10 runs each, CPU-µs per serial (mean ±
// standard error): par=1 326±5 (sqlite, modernc) and 326±5 (sqlite3,
// cgo); par=4 235±8 and 217±9, a gap within the noise of a run (±25),
// and none end to end (see SQLiteDriver).
func BenchmarkSerialWrites(b *testing.B) {
	for _, driver := range sqliteDrivers {
		for _, par := range []int{1, 4} {
			b.Run(driver+"/par="+strconv.Itoa(par), func(b *testing.B) {
				db, _ := openTestDriver(b, driver)
				benchSerialWrites(b, db, par)
			})
		}
	}
}

func benchSerialWrites(b *testing.B, db *DB, par int) {
	ctx := context.Background()
	const brand, model = "bench-brand", "bench-model"
	err := db.Update(ctx, func(tx *Tx) error {
		return tx.PutModel(ModelConfig{Brand: brand, Model: model, Keys: map[string]string{"serial": "k"}, SerialSource: "assign"})
	})
	if err != nil {
		b.Fatal(err)
	}
	nonces := make([]string, b.N)
	for i := range nonces {
		nonces[i] = fmt.Sprintf("%032x", i)
	}
	assertion := make([]byte, 2300) // an encoded serial assertion's size
	var next atomic.Int64
	commits0, cpu0 := db.Commits(), cpuTime()
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				nonce := nonces[i]
				var serial string
				err := db.UpdateUnsynced(ctx, func(tx *Tx) error {
					if err := tx.ClaimNonce(nonce, "factory", time.Now().Add(time.Hour)); err != nil {
						return err
					}
					n, err := tx.NextSerial(brand, model)
					if err != nil {
						return err
					}
					serial = "S" + strconv.FormatInt(n, 10)
					return tx.ReserveSerial(SerialRecord{Brand: brand, Model: model, Serial: serial, DeviceKeyID: "dk", Client: "factory", Nonce: nonce})
				})
				if err == nil {
					err = db.Update(ctx, func(tx *Tx) error {
						if err := tx.IssueSerial(brand, model, serial, nonce, assertion); err != nil {
							return err
						}
						if err := tx.ConsumeNonce(nonce); err != nil {
							return err
						}
						id, err := tx.LogSignature(LogEntry{Type: "serial", KeyID: "kid", Brand: brand, Model: model, Serial: serial, DeviceKeyID: "dk", Client: "factory", Digest: "d"})
						if err != nil {
							return err
						}
						_, err = tx.Audit("client:factory", "serial.sign", brand+"/"+model+"/"+serial, "ok", map[string]any{"log_id": id})
						return err
					})
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/serial")
	b.ReportMetric(float64(db.Commits()-commits0)/float64(b.N), "commits/serial")
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
