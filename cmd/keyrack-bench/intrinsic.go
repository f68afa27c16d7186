package main

import (
	"context"
	"crypto/sha3"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/device"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
)

// intrinsicFloor measures the least any appliance must do to issue a
// serial durably with a token key: read the request over HTTP, decode the
// serial-request and model, check the device's signature, assemble the
// serial, have the token sign it and check that signature (a token's
// faulty RSA signature can give its key away), record it in one durable
// transaction, and answer. Nothing else keyrackd does is here: no API
// key, policy, request-id, serial reservation, admission limit or audit
// chain. Served in this process by a bare net/http handler over loopback
// to the streams (floorStreams) from c clients. What end to end loses
// beyond this is what the appliance adds; what this loses against raw
// signing is what no design with these parts can win back on these CPUs.
// rows is how many signatures its store recorded.
func intrinsicFloor(key *hsm.Key, c int, streams [][]byte) (r result, rows int, err error) {
	fs, err := startFloor(key)
	if err != nil {
		return r, 0, err
	}
	reqs := make([][]byte, len(streams))
	for i, st := range streams {
		reqs[i] = rawRequest(fs.addr, "/v1/serial", "-", asserts.MediaType, st)
	}
	s0, o0 := threadCPU(os.Getpid())
	r = replay(fs.addr, c, reqs)
	if s1, o1 := threadCPU(os.Getpid()); s1 > s0 && r.ok > 0 {
		// Everything but signing, the clients of this process included.
		r.signCPU, r.ownCPU = (s1-s0)/time.Duration(r.ok), (o1-o0)/time.Duration(r.ok)
	}
	r.name = "intrinsic work only (see below)"
	rows, err = fs.close()
	if err == nil && r.other > 0 {
		err = fmt.Errorf("intrinsic floor: %d requests failed", r.other)
	}
	return r, rows, err
}

// floorServer is the intrinsic floor's HTTP service: the bare handler,
// its signer and its store.
type floorServer struct {
	addr string
	srv  *http.Server
	db   *store.DB
	dir  string
}

// startFloor serves the intrinsic floor on a loopback port with key.
func startFloor(key *hsm.Key) (_ *floorServer, err error) {
	ctx := context.Background()
	signer, err := assertion.NewSigner(key)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "keyrack-bench-floor-")
	if err != nil {
		return nil, err
	}
	db, err := store.OpenSQLite(ctx, filepath.Join(dir, "floor.db"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		db.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	var serials atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ds, err := assertion.ParseDeviceStream(io.LimitReader(r.Body, assertion.MaxStreamBytes+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := ds.Request
		serial := "F" + strconv.FormatInt(serials.Add(1), 10)
		signed, err := signer.Serial(assertion.Serial{BrandID: req.BrandID(), Model: req.Model(), Serial: serial,
			DeviceKey: req.DeviceKey(), Timestamp: time.Now(), Body: req.Body()})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		sum := sha3.Sum384(signed.Bytes)
		err = db.Update(context.WithoutCancel(r.Context()), func(tx *store.Tx) error {
			_, err := tx.LogSignature(store.LogEntry{Type: "serial", KeyID: signer.KeyID(), Brand: req.BrandID(), Model: req.Model(),
				Serial: serial, DeviceKeyID: req.DeviceKey().ID(), Client: "bench", Digest: base64.RawURLEncoding.EncodeToString(sum[:])})
			return err
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", asserts.MediaType)
		w.Header().Set("Content-Length", strconv.Itoa(len(signed.Bytes)))
		w.Write(signed.Bytes)
	})}
	go srv.Serve(ln)
	return &floorServer{addr: ln.Addr().String(), srv: srv, db: db, dir: dir}, nil
}

// close stops the service and says how many signatures its store
// recorded.
func (fs *floorServer) close() (rows int, err error) {
	fs.srv.Close()
	defer os.RemoveAll(fs.dir)
	defer fs.db.Close()
	err = fs.db.View(context.Background(), func(tx *store.Tx) error {
		logged, err := tx.SigningLog(store.LogFilter{})
		rows = len(logged)
		return err
	})
	return rows, err
}

// floorStreams makes n serial request streams for intrinsicFloor from
// devs, with a model signed by key (the floor does not check models).
func floorStreams(key *hsm.Key, devs []*device.Device, n int) ([][]byte, error) {
	signer, err := assertion.NewSigner(key)
	if err != nil {
		return nil, err
	}
	model, err := signer.Model(appliance.DemoBrand, map[string]any{"model": appliance.DemoModel, "architecture": "amd64",
		"gadget": "pc", "kernel": "pc-kernel", "timestamp": time.Now().UTC().Format(time.RFC3339)}, nil)
	if err != nil {
		return nil, err
	}
	streams := make([][]byte, n)
	for i := range streams {
		// A copy of the device with this model: the caller's devices keep
		// the model they carry.
		dv := *devs[i%len(devs)]
		dv.ModelAssertion = model.Bytes
		sr, err := dv.SerialRequest("floor-"+strconv.Itoa(i), "", nil)
		if err != nil {
			return nil, err
		}
		streams[i] = dv.Stream(sr)
	}
	return streams, nil
}
