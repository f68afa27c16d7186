package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
)

// syncBuffer is a log destination the checkpointer's goroutine writes to
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestCheckpointsFollowOfficersAndEvents: the checkpointer signs a head
// soon after an officer's event, and after checkpointEvents events of
// others, never when only checkpoints happened; each is one structured
// log line.
func TestCheckpointsFollowOfficersAndEvents(t *testing.T) {
	e := newCoreEnv(t)
	var logs syncBuffer
	e.app.log = slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go e.app.RunCheckpoints(ctx)

	latest := func() store.Checkpoint {
		var c store.Checkpoint
		e.db.View(ctx, func(tx *store.Tx) error {
			c, _ = tx.LatestCheckpoint()
			return nil
		})
		return c
	}
	audit := func(actor string, n int) int64 {
		var seq int64
		for i := 0; i < n; i++ {
			if err := e.db.Update(ctx, func(tx *store.Tx) error {
				ev, err := tx.Audit(actor, "test.event", "x", "ok", nil)
				seq = ev.Seq
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		return seq
	}
	waitFor := func(seq int64, what string) store.Checkpoint {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if c := latest(); c.Seq >= seq {
				return c
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no checkpoint of event %d after %s", seq, what)
		return store.Checkpoint{}
	}

	seq := audit("officer:alice", 1)
	c := waitFor(seq, "an officer's event")
	// Client events below the count: no checkpoint (the minute is far).
	seq = audit("client:line", 10)
	time.Sleep(200 * time.Millisecond)
	if l := latest(); l.Seq != c.Seq {
		t.Fatalf("a checkpoint (of %d) after 10 client events", l.Seq)
	}
	end := audit("client:line", checkpointEvents)
	// The count of events crossed a multiple of checkpointEvents among
	// these: a checkpoint after it leaves fewer than that uncovered.
	c = waitFor(seq+1, "checkpointEvents events")
	if end-c.Seq >= checkpointEvents {
		t.Fatalf("checkpoint of %d, %d events later", c.Seq, end-c.Seq)
	}

	// The events after it get theirs; then nothing but that checkpoint's
	// own event happened, and none is made.
	var err error
	if c, _, err = e.app.Checkpoint(ctx); err != nil || c.Seq != end {
		t.Fatalf("checkpoint of %d (want %d): %v", c.Seq, end, err)
	}
	if _, made, err := e.app.Checkpoint(ctx); made || err != nil {
		t.Fatalf("checkpoint when idle: made %v, %v", made, err)
	}

	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(l, `"event":"audit.checkpoint"`) {
			json.Unmarshal([]byte(l), &line)
		}
	}
	if line == nil || line["seq"] != float64(c.Seq) || line["key"] != c.Key || line["signature"] == "" || line["head"] == "" {
		t.Fatalf("the last checkpoint's log line %v, checkpoint %+v\n%s", line, c, logs.String())
	}
}
