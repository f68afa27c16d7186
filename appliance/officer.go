package appliance

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/keyrack/keyrack/appliance/keyfile"
	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/hsm/keywrap"
)

// What officers read and propose. Every proposal is checked now (so that
// officers learn of a mistake before approving it) and carried out only
// when the quorum has approved it (ceremony.go).

// ImportKey describes the import key officers wrap brand keys to.
func (a *Appliance) ImportKey() wire.ImportKey {
	pub := a.importKey.Info().Public
	return wire.ImportKey{
		PublicKeyPEM:  importKeyPEM(pub),
		Fingerprint:   importKeyFingerprint(pub),
		Bits:          pub.N.BitLen(),
		Method:        ImportMethod,
		TokenMethod:   a.mod.ImportMethod(),
		WrapStructure: "RSA-OAEP(SHA-1, MGF1-SHA-1)(AES-256 key) || AES-KWP RFC 5649(PKCS#8 RSA private key)",
	}
}

// keyView is a key's record as officers see it; withToken adds what the
// token says of its object.
func (a *Appliance) keyView(ctx context.Context, k store.Key, withToken bool) wire.Key {
	b := wire.Key{Name: k.Name, KeyID: k.KeyID, Bits: k.Bits, Roles: json.RawMessage(k.Roles), Origin: k.Origin,
		State: string(k.State), CreatedAt: k.CreatedAt, AccountKey: len(k.AccountKey) > 0, ProposalID: k.ProposalID}
	if pub, err := x509.ParsePKIXPublicKey(k.PublicKey); err == nil {
		if rp, ok := pub.(*rsa.PublicKey); ok {
			b.PublicKey, _ = snapPublicKey(rp)
		}
	}
	if r, err := parseRoles(json.RawMessage(k.Roles)); err == nil {
		b.Constraints = r.scope.Constraints()
	}
	if withToken && (k.State == store.KeyActive || k.State == store.KeyDisabled) {
		to := &wire.TokenObject{}
		hk, err := a.mod.FindKey(ctx, k.CKAID)
		if err != nil {
			to.Error = AsError(err).Message
		} else {
			i := hk.Info()
			to.Present, to.Origin, to.Sensitive, to.Extractable, to.NeverExtractable = true, i.Origin(), i.Sensitive, i.Extractable, i.NeverExtractable
		}
		b.TokenObject = to
	}
	return b
}

// keyRecord reads key name's record.
func (a *Appliance) keyRecord(ctx context.Context, name string) (store.Key, error) {
	var k store.Key
	err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		k, err = tx.GetKey(name)
		return err
	})
	return k, err
}

// proposalRecord reads proposal id.
func (a *Appliance) proposalRecord(ctx context.Context, id string) (store.Proposal, error) {
	var p store.Proposal
	err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		p, err = tx.GetProposal(id)
		return err
	})
	return p, err
}

// ListKeys lists every key record.
func (a *Appliance) ListKeys(ctx context.Context) ([]wire.Key, error) {
	var keys []store.Key
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		keys, err = tx.ListKeys()
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]wire.Key, 0, len(keys))
	for _, k := range keys {
		out = append(out, a.keyView(ctx, k, false))
	}
	return out, nil
}

// GetKey is one key's record with what the token says of its object.
func (a *Appliance) GetKey(ctx context.Context, name string) (wire.Key, error) {
	k, err := a.keyRecord(ctx, name)
	if err != nil {
		return wire.Key{}, err
	}
	return a.keyView(ctx, k, true), nil
}

// ProposeGenerate proposes a key generated in the token.
func (a *Appliance) ProposeGenerate(ctx context.Context, officer string, req wire.KeyRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindKeyGenerate, &err)
	if req.Blob != nil || req.Key != nil {
		return Outcome{}, badInput("invalid-argument", "generate takes a name and roles only")
	}
	return a.propose(ctx, officer, KindKeyGenerate,
		fmt.Sprintf("generate RSA-4096 key %q in the token with roles %s", req.Name, compactJSON(req.Roles)),
		keyPayload{Name: req.Name, Roles: req.Roles})
}

// ProposeImport proposes a key wrapped to the import key (req.Blob).
func (a *Appliance) ProposeImport(ctx context.Context, officer string, req wire.KeyRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindKeyImport, &err)
	if len(req.Blob) == 0 || req.Key != nil {
		return Outcome{}, badInput("invalid-argument", "import takes name, roles, blob (the wrapped key, base64) and sign-key-sha3-384")
	}
	if req.KeyID == "" {
		return Outcome{}, badInput("invalid-argument", "import takes the wrapped key's sign-key-sha3-384, as `keyrack wrap` prints it: officers approve that key, and the import is refused if the blob holds another")
	}
	head := a.importKey.Info().Public.Size()
	if len(req.Blob) < head+24 || (len(req.Blob)-head)%8 != 0 {
		return Outcome{}, badInput("bad-wrapped-key", fmt.Sprintf("blob of %d bytes is not RSA-OAEP(%d bytes) || AES-KWP: wrap it with `keyrack wrap`", len(req.Blob), head))
	}
	sum := sha256.Sum256(req.Blob)
	return a.propose(ctx, officer, KindKeyImport,
		fmt.Sprintf("import wrapped key %q %s (blob sha256 %s) with roles %s", req.Name, req.KeyID, hex.EncodeToString(sum[:]), compactJSON(req.Roles)),
		keyPayload{Name: req.Name, Roles: req.Roles, Blob: req.Blob, Source: "wrapped", KeyID: req.KeyID})
}

// ProposeUpload takes a plaintext key (req.Key, Serial Vault style),
// checks it, wraps it to the import key at once and zeroes every plaintext
// buffer it made; the proposal holds only the wrapped blob, which the
// token unwraps on approval. The caller zeroes req.Key.
func (a *Appliance) ProposeUpload(ctx context.Context, officer string, req wire.KeyRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindKeyImport, &err)
	if len(req.Key) == 0 || req.Blob != nil {
		return Outcome{}, badInput("invalid-argument", "upload takes name, roles and key (the armored OpenPGP secret key or PEM, base64)")
	}
	key, info, err := keyfile.Parse(req.Key, 4096)
	if err != nil {
		return Outcome{}, badInput("bad-key", err.Error())
	}
	keyID, err := snapKeyID(&key.PublicKey)
	if err != nil {
		keyfile.Zero(key)
		return Outcome{}, err
	}
	der, err := keyfile.PKCS8(key)
	keyfile.Zero(key)
	if err != nil {
		return Outcome{}, err
	}
	blob, err := keywrap.Wrap(a.importKey.Info().Public, der)
	clear(der)
	if err != nil {
		return Outcome{}, err
	}
	what := info.Format
	if info.Fingerprint != "" {
		what += " " + info.Fingerprint
	}
	return a.propose(ctx, officer, KindKeyImport,
		fmt.Sprintf("import uploaded %s RSA-%d key %q %s with roles %s", what, info.Bits, req.Name, keyID, compactJSON(req.Roles)),
		keyPayload{Name: req.Name, Roles: req.Roles, Blob: blob, Source: "armored-upload", Fingerprint: info.Fingerprint, KeyID: keyID})
}

// ProposeKeyChange proposes disabling, enabling or destroying a key (kind
// KindKeyDisable, KindKeyEnable or KindKeyDestroy).
func (a *Appliance) ProposeKeyChange(ctx context.Context, officer, kind, name string) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", kind, &err)
	switch kind {
	case KindKeyDisable, KindKeyEnable, KindKeyDestroy:
	default:
		return Outcome{}, badInput("unknown-kind", "unknown proposal kind "+kind)
	}
	return a.propose(ctx, officer, kind, fmt.Sprintf("%s key %q", kind, name), namePayload{Name: name})
}

// ProposeOfficerAdd proposes a new officer with the public key they made.
// Approvers see the key's fingerprint in the summary.
func (a *Appliance) ProposeOfficerAdd(ctx context.Context, officer string, req wire.OfficerRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindOfficerAdd, &err)
	pub, err := parseOfficerKey(req.PublicKey)
	if err != nil {
		return Outcome{}, err
	}
	if err := validCertSHA256(req.ClientCertSHA256); err != nil {
		return Outcome{}, err
	}
	return a.propose(ctx, officer, KindOfficerAdd, fmt.Sprintf("add officer %q with key %s", req.Name, officerkey.Fingerprint(pub)),
		officerPayload{Name: req.Name, PublicKey: officerkey.Authorized(pub), CertSHA256: req.ClientCertSHA256})
}

// ProposeOfficerRotate proposes replacing officer's own key: the proposal
// is signed with the old key like any approval, and takes the quorum.
func (a *Appliance) ProposeOfficerRotate(ctx context.Context, officer string, req wire.OfficerRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindOfficerRotate, &err)
	pub, err := parseOfficerKey(req.PublicKey)
	if err != nil {
		return Outcome{}, err
	}
	if req.Name == "" {
		req.Name = officer
	}
	if err := validCertSHA256(req.ClientCertSHA256); err != nil {
		return Outcome{}, err
	}
	return a.propose(ctx, officer, KindOfficerRotate, fmt.Sprintf("replace the key of officer %q with %s", req.Name, officerkey.Fingerprint(pub)),
		officerPayload{Name: req.Name, PublicKey: officerkey.Authorized(pub), CertSHA256: req.ClientCertSHA256})
}

// ProposeOfficerRemove proposes removing an officer.
func (a *Appliance) ProposeOfficerRemove(ctx context.Context, officer, name string) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindOfficerRemove, &err)
	return a.propose(ctx, officer, KindOfficerRemove, fmt.Sprintf("remove officer %q", name), namePayload{Name: name})
}

// ProposeClientRevoke proposes revoking an API client.
func (a *Appliance) ProposeClientRevoke(ctx context.Context, officer, name string) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindClientRevoke, &err)
	return a.propose(ctx, officer, KindClientRevoke, fmt.Sprintf("revoke API client %q", name), namePayload{Name: name})
}

// Approve adds officer's signed approval to proposal id (see approve).
func (a *Appliance) Approve(ctx context.Context, officer, id string, req wire.ApproveRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.approve", id, &err)
	return a.approve(ctx, officer, id, req.Signature)
}

// Cancel withdraws proposal id (see cancel).
func (a *Appliance) Cancel(ctx context.Context, officer, id string) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.cancel", id, &err)
	return a.cancel(ctx, officer, id)
}

// proposalView shows what officers approve. A wrapped blob is shown by its
// digest: it is large and only the token can read it.
func proposalView(p store.Proposal, quorum int) wire.Proposal {
	details := map[string]any{}
	_ = json.Unmarshal([]byte(p.Payload), &details)
	if blob, ok := details["blob"].(string); ok {
		sum := sha256.Sum256([]byte(blob))
		details["blob"] = fmt.Sprintf("%d bytes base64, sha256 %s", len(blob), hex.EncodeToString(sum[:]))
	}
	return wire.Proposal{ID: p.ID, Kind: p.Kind, Summary: p.Summary, Content: p.Content, Details: details, Proposer: p.Proposer,
		State: string(p.State), Result: p.Result, Approvals: p.Officers(), Quorum: quorum,
		CreatedAt: p.CreatedAt, ExpiresAt: p.ExpiresAt, DecidedAt: p.DecidedAt}
}

// ListProposals lists proposals, newest first, of one state or all ("").
func (a *Appliance) ListProposals(ctx context.Context, state string) ([]wire.Proposal, error) {
	st := store.ProposalState(state)
	switch st {
	case "", store.ProposalPending, store.ProposalExecuted, store.ProposalFailed, store.ProposalCancelled, store.ProposalExpired:
	default:
		return nil, badInput("invalid-argument", "state must be pending, executed, failed, cancelled or expired")
	}
	var ps []store.Proposal
	var q int
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		if q, err = quorumIn(tx); err != nil {
			return err
		}
		ps, err = tx.ListProposals(st, 200)
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]wire.Proposal, 0, len(ps))
	for _, p := range ps {
		out = append(out, proposalView(p, q))
	}
	return out, nil
}

// GetProposal is one proposal.
func (a *Appliance) GetProposal(ctx context.Context, id string) (wire.Proposal, error) {
	var p store.Proposal
	var q int
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		if q, err = quorumIn(tx); err != nil {
			return err
		}
		p, err = tx.GetProposal(id)
		return err
	}); err != nil {
		return wire.Proposal{}, err
	}
	return proposalView(p, q), nil
}

// ListOfficers lists the officers, removed ones included, and the quorum.
func (a *Appliance) ListOfficers(ctx context.Context) (wire.OfficerList, error) {
	var os []store.Officer
	var q int
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		if q, err = quorumIn(tx); err != nil {
			return err
		}
		os, err = tx.ListOfficers()
		return err
	}); err != nil {
		return wire.OfficerList{}, err
	}
	out := wire.OfficerList{Officers: make([]wire.Officer, 0, len(os)), Quorum: q}
	for _, o := range os {
		v := wire.Officer{Name: o.Name, PublicKey: o.PublicKey, ClientCertSHA256: o.CertSHA256, CreatedAt: o.CreatedAt, RevokedAt: o.RevokedAt}
		if pub, err := officerKey(o); err == nil {
			v.KeyFP = officerkey.Fingerprint(pub)
		}
		out.Officers = append(out.Officers, v)
	}
	return out, nil
}

// ListClients lists the API clients, revoked ones included.
func (a *Appliance) ListClients(ctx context.Context) ([]wire.Client, error) {
	var cs []store.Client
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		cs, err = tx.ListClients()
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]wire.Client, 0, len(cs))
	for _, x := range cs {
		out = append(out, clientView(x))
	}
	return out, nil
}

// AuditEvents reads up to limit audit events after event number after.
// An officer's copy of the chain must not hold an event a crash could
// still take back (it would look like tampering later), so the read waits
// for the store to be durable (store.DB.ViewDurable).
func (a *Appliance) AuditEvents(ctx context.Context, after int64, limit int) ([]wire.AuditEvent, error) {
	var evs []store.AuditEvent
	if err := a.db.ViewDurable(ctx, func(tx *store.Tx) error {
		var err error
		evs, err = tx.AuditEvents(after, limit)
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]wire.AuditEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, wire.AuditEvent{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Subject: e.Subject, Result: e.Result,
			Details: json.RawMessage(e.Details), PrevHash: hex.EncodeToString(e.PrevHash), Hash: hex.EncodeToString(e.Hash)})
	}
	return out, nil
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}
