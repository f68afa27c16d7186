package auditverify

import (
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// CheckpointFromWire reads a checkpoint as the API and exports carry it,
// and returns it with its public key (DER) when it carries one.
func CheckpointFromWire(w wire.AuditCheckpoint) (store.Checkpoint, []byte, error) {
	head, err1 := hex.DecodeString(w.Head)
	prev, err2 := hex.DecodeString(w.PrevHead)
	if err1 != nil || err2 != nil {
		return store.Checkpoint{}, nil, fmt.Errorf("checkpoint of event %d: bad hash encoding", w.Seq)
	}
	if len(prev) == 0 {
		prev = nil
	}
	var pub []byte
	if w.PublicKeyPEM != "" {
		b, _ := pem.Decode([]byte(w.PublicKeyPEM))
		if b == nil || b.Type != "PUBLIC KEY" {
			return store.Checkpoint{}, nil, fmt.Errorf("checkpoint of event %d: unreadable public key", w.Seq)
		}
		pub = b.Bytes
	}
	return store.Checkpoint{Seq: w.Seq, Head: head, Time: w.Time, Appliance: w.Appliance, PrevSeq: w.PrevSeq, PrevHead: prev,
		Key: w.Key, Signature: w.Signature, EventSeq: w.EventSeq}, pub, nil
}

// ReadHead reads a head saved with keyrack audit head.
func ReadHead(path string) (*store.Checkpoint, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var w wire.AuditCheckpoint
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, nil, fmt.Errorf("%s: not a saved head: %w", path, err)
	}
	if w.Seq < 1 || w.EventSeq <= w.Seq || len(w.Signature) == 0 {
		return nil, nil, fmt.Errorf("%s: not a saved head (no seq, event or signature)", path)
	}
	h, pub, err := CheckpointFromWire(w)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return &h, pub, nil
}
