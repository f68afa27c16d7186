// Package auditverify re-verifies, offline, what the audit chain says of
// officers: every approval it records is checked against the officer's
// key as the chain itself recorded it (at bootstrap, officer.add and
// officer.rotate), over the proposal's content as the chain recorded it
// (proposal.create). Run after the hash chain's own check (store's
// AuditVerifier), it needs nothing but the events: a third party with an
// export verifies what officers approved without trusting the appliance or
// its store. Against a store it also checks the approvals on record: each
// must be one the chain saw, with the same signature.
//
// It imports keyrack's store (for its event and proposal types) and
// officerkey (for the signatures), and nothing of the appliance's core.
package auditverify

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
)

// Approvals follows the chain's officers, proposals and approvals.
type Approvals struct {
	keys     map[string]ssh.PublicKey   // officer -> current key
	held     map[string][]ssh.PublicKey // officer -> every key held
	removed  map[string]bool
	contents map[string]string // proposal id -> content
	approved map[string]string // proposal id + "\x00" + officer -> signature (base64)
	// Verified counts the approvals whose signatures were checked.
	Verified int
}

// New starts with no officer and no proposal known.
func New() *Approvals {
	return &Approvals{keys: map[string]ssh.PublicKey{}, held: map[string][]ssh.PublicKey{}, removed: map[string]bool{},
		contents: map[string]string{}, approved: map[string]string{}}
}

func broken(e store.AuditEvent, format string, args ...any) error {
	return &store.ChainError{Seq: e.Seq, Reason: fmt.Sprintf(format, args...)}
}

// Check takes the next events of the chain, in order.
func (v *Approvals) Check(events []store.AuditEvent) error {
	for _, e := range events {
		if e.Result != "ok" {
			continue
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(e.Details), &d); err != nil {
			return broken(e, "unreadable details")
		}
		str := func(k string) string { s, _ := d[k].(string); return s }
		switch e.Action {
		case "officer.bootstrap", "officer.add", "officer.rotate":
			line := str("public_key")
			if line == "" {
				continue // officers recorded before officers had keys
			}
			pub, err := officerkey.ParsePublicKey([]byte(line))
			if err != nil {
				return broken(e, "officer %s: recorded key: %v", e.Subject, err)
			}
			v.keys[e.Subject] = pub
			v.held[e.Subject] = append(v.held[e.Subject], pub)
			delete(v.removed, e.Subject)
		case "officer.remove":
			v.removed[e.Subject] = true
			delete(v.keys, e.Subject)
		case "proposal.create":
			_, id, ok := strings.Cut(e.Subject, " ")
			if c := str("content"); ok && c != "" {
				v.contents[id] = c
			}
		case "proposal.approve":
			if err := v.approval(e, str("signature")); err != nil {
				return err
			}
		}
	}
	return nil
}

func (v *Approvals) approval(e store.AuditEvent, sigB64 string) error {
	officer, ok := strings.CutPrefix(e.Actor, "officer:")
	_, id, ok2 := strings.Cut(e.Subject, " ")
	if !ok || !ok2 {
		return broken(e, "approval without an officer or a proposal")
	}
	if sigB64 == "" {
		return broken(e, "approval of %s by %s carries no signature", id, officer)
	}
	content, ok := v.contents[id]
	if !ok {
		return broken(e, "approval of %s by %s: the chain records no such proposal", id, officer)
	}
	pub, ok := v.keys[officer]
	if !ok || v.removed[officer] {
		return broken(e, "approval of %s by %s, who holds no key in the chain at that point", id, officer)
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return broken(e, "approval of %s by %s: unreadable signature", id, officer)
	}
	if err := officerkey.Verify(pub, officerkey.DomainApproval, []byte(content), sig); err != nil {
		return broken(e, "approval of %s by %s does not verify with %s, the key the chain records for %s: %v",
			id, officer, officerkey.Fingerprint(pub), officer, err)
	}
	v.approved[id+"\x00"+officer] = sigB64
	v.Verified++
	return nil
}

// RecordError names a proposal on record in the store that disagrees with
// the chain.
type RecordError struct {
	Proposal string
	Reason   string
}

func (e *RecordError) Error() string { return fmt.Sprintf("proposal %s: %s", e.Proposal, e.Reason) }

// CheckRecord checks a proposal as the store holds it against the chain
// (Check must have seen the whole chain): its content must be what the
// chain recorded, and each approval on record must be one the chain
// recorded, with the same signature, by a key the officer held.
func (v *Approvals) CheckRecord(p store.Proposal) error {
	if p.Content == "" && len(p.Approvals) == 0 {
		return nil // a proposal made before approvals were signatures
	}
	if c, ok := v.contents[p.ID]; !ok || c != p.Content {
		return &RecordError{p.ID, "its content is not what the audit chain recorded when it was proposed"}
	}
	for _, ap := range p.Approvals {
		sig := base64.StdEncoding.EncodeToString(ap.Signature)
		if v.approved[p.ID+"\x00"+ap.Officer] != sig {
			return &RecordError{p.ID, fmt.Sprintf("the approval by %s on record is not one the audit chain recorded", ap.Officer)}
		}
		ok := false
		for _, pub := range v.held[ap.Officer] {
			if officerkey.Verify(pub, officerkey.DomainApproval, []byte(p.Content), ap.Signature) == nil {
				ok = true
				break
			}
		}
		if !ok {
			return &RecordError{p.ID, fmt.Sprintf("the approval by %s on record does not verify with any key %s held", ap.Officer, ap.Officer)}
		}
	}
	return nil
}
