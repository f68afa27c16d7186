package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/wire"
)

func (c *cli) status(ctx context.Context) int {
	var h wire.Health
	// Health answers 503 with the same body when the token is down. The
	// details come to an officer only: with a key at hand, log in for them.
	officer := c.keyFile != "" || c.agent
	resp, err := c.send(ctx, http.MethodGet, "/v1/health", "", nil, officer)
	if err != nil {
		fmt.Fprintf(c.stderr, "keyrack: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&h); err != nil {
		fmt.Fprintf(c.stderr, "keyrack: unreadable answer from %s (HTTP %d): %v\n", c.url, resp.StatusCode, err)
		return 1
	}
	if h.Version == "" {
		// The summary anyone gets.
		fmt.Fprintf(c.stdout, "appliance  %s (%s; details for officers: -key FILE or KEYRACK_OFFICER_KEY)\n", h.Status, h.Reason)
		if resp.StatusCode != http.StatusOK {
			return 1
		}
		return 0
	}
	fmt.Fprintf(c.stdout, "appliance  %s (version %s)\n", h.Status, h.Version)
	if h.Token.Up {
		fmt.Fprintf(c.stdout, "token      up: %s (serial %s, %s)\n", h.Token.Label, h.Token.Serial, h.Token.Model)
	} else {
		fmt.Fprintf(c.stdout, "token      DOWN: %s\n", h.Token.Error)
	}
	fmt.Fprintf(c.stdout, "sessions   %d in use of %d; %d recoveries\n", h.Token.InUse, h.Token.Sessions, h.Token.Recoveries)
	if h.Store != "" && h.Store != "ok" {
		fmt.Fprintf(c.stdout, "store      FAILED: %s\n", h.Store)
	}
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

func (c *cli) importKey(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("import-key", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	out := fs.String("o", "", "write the PEM public key to this file")
	if err := fs.Parse(args); err != nil {
		return usageErr("import-key [-o FILE]")
	}
	var ik wire.ImportKey
	if _, err := c.call(ctx, "GET", "/v1/import-key", nil, &ik, false); err != nil {
		return err
	}
	if *out != "" {
		if err := os.WriteFile(*out, []byte(ik.PublicKeyPEM), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "wrote %s\n", *out)
	} else {
		fmt.Fprint(c.stdout, ik.PublicKeyPEM)
	}
	fmt.Fprintf(c.stdout, "fingerprint (sha256) %s\nRSA-%d, method %s (token: %s)\n", ik.Fingerprint, ik.Bits, ik.Method, ik.TokenMethod)
	fmt.Fprintln(c.stdout, "Confirm the fingerprint with the appliance's console or a second officer before wrapping to it.")
	return nil
}

// shownKey is what `keys show` prints: the CLI's own output, kept as it
// was for the officers and scripts reading it. wire.Key is not printed as
// is because it has more fields (proposal, model-patterns, the token's
// never-extractable) and leaves empty ones out, where this prints them.
type shownKey struct {
	Name        string          `json:"name"`
	KeyID       string          `json:"sign-key-sha3-384"`
	PublicKey   string          `json:"public-key"`
	Bits        int             `json:"bits"`
	Roles       json.RawMessage `json:"roles"`
	Origin      string          `json:"origin"`
	State       string          `json:"state"`
	CreatedAt   time.Time       `json:"created-at"`
	AccountKey  bool            `json:"account-key-present"`
	Constraints []any           `json:"constraints"`
	Token       *shownToken     `json:"token"`
}

// shownToken is the token object in shownKey.
type shownToken struct {
	Present     bool   `json:"present"`
	Origin      string `json:"origin"`
	Sensitive   bool   `json:"sensitive"`
	Extractable bool   `json:"extractable"`
	Error       string `json:"error"`
}

func showKey(k wire.Key) shownKey {
	s := shownKey{Name: k.Name, KeyID: k.KeyID, PublicKey: k.PublicKey, Bits: k.Bits, Roles: k.Roles, Origin: k.Origin,
		State: k.State, CreatedAt: k.CreatedAt, AccountKey: k.AccountKey, Constraints: k.Constraints}
	if t := k.TokenObject; t != nil {
		s.Token = &shownToken{Present: t.Present, Origin: t.Origin, Sensitive: t.Sensitive, Extractable: t.Extractable, Error: t.Error}
	}
	return s
}

// shownProposal is what `proposals show` prints, kept as it was: wire.Proposal
// also has created-at and decided-at, and leaves out an empty result.
type shownProposal struct {
	ID        string         `json:"id"`
	Kind      string         `json:"kind"`
	Summary   string         `json:"summary"`
	Details   map[string]any `json:"details"`
	Proposer  string         `json:"proposer"`
	State     string         `json:"state"`
	Result    string         `json:"result"`
	Approvals []string       `json:"approvals"`
	Quorum    int            `json:"quorum"`
	ExpiresAt time.Time      `json:"expires-at"`
}

func showProposal(p wire.Proposal) shownProposal {
	return shownProposal{ID: p.ID, Kind: p.Kind, Summary: p.Summary, Details: p.Details, Proposer: p.Proposer, State: p.State,
		Result: p.Result, Approvals: p.Approvals, Quorum: p.Quorum, ExpiresAt: p.ExpiresAt}
}

// listFlags parses the flags of a listing command that takes -json only.
func (c *cli) listFlags(name string, args []string) (bool, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	asJSON := fs.Bool("json", false, "print the appliance's JSON answer instead of the table")
	rest, err := parseAll(fs, args)
	if err != nil || len(rest) != 0 {
		return false, usageErr(name + " [-json]")
	}
	return *asJSON, nil
}

// listing gets path as an officer and prints its JSON answer (asJSON), or
// decodes it into out for the caller's table.
func (c *cli) listing(ctx context.Context, path string, asJSON bool, out any) (printed bool, err error) {
	if asJSON {
		var raw json.RawMessage
		if _, err := c.call(ctx, "GET", path, nil, &raw, true); err != nil {
			return false, err
		}
		return true, c.printJSON(raw)
	}
	_, err = c.call(ctx, "GET", path, nil, out, true)
	return false, err
}

// subcommand splits a command's subcommand from its arguments: def when
// there is none or the arguments start with a flag.
func subcommand(args []string, def string) (string, []string) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return def, args
	}
	return args[0], args[1:]
}

func (c *cli) keys(ctx context.Context, args []string) error {
	sub, args := subcommand(args, "list")
	switch sub {
	case "list":
		asJSON, err := c.listFlags("keys list", args)
		if err != nil {
			return err
		}
		var ans wire.KeyList
		if printed, err := c.listing(ctx, "/v1/keys", asJSON, &ans); err != nil || printed {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSTATE\tORIGIN\tBITS\tROLES\tSIGN-KEY-SHA3-384")
		for _, k := range ans.Keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", k.Name, k.State, k.Origin, k.Bits, compact(k.Roles), k.KeyID)
		}
		return tw.Flush()
	case "show":
		fs := flag.NewFlagSet("keys show", flag.ContinueOnError)
		fs.SetOutput(c.stderr)
		asJSON := fs.Bool("json", false, "print the appliance's JSON answer as it is (all its fields)")
		rest, err := parseAll(fs, args)
		if err != nil || len(rest) != 1 {
			return usageErr("keys show NAME [-json]")
		}
		var k wire.Key
		if printed, err := c.listing(ctx, "/v1/keys/"+url.PathEscape(rest[0]), *asJSON, &k); err != nil || printed {
			return err
		}
		b, _ := json.MarshalIndent(showKey(k), "", "  ")
		fmt.Fprintln(c.stdout, string(b))
		return nil
	case "generate", "import", "upload":
		return c.keyCeremony(ctx, sub, args)
	case "disable", "enable", "destroy":
		fs, yes := c.stepFlags("keys " + sub)
		rest, err := parseAll(fs, args)
		if err != nil || len(rest) != 1 {
			return usageErr("keys " + sub + " NAME [-yes]")
		}
		return c.propose(ctx, "POST", "/v1/keys/"+url.PathEscape(rest[0])+"/"+sub, nil, false, *yes)
	case "freeze":
		if len(args) != 1 || strings.HasPrefix(args[0], "-") {
			return usageErr("keys freeze NAME")
		}
		var k wire.Key
		if _, err := c.call(ctx, "POST", "/v1/keys/"+url.PathEscape(args[0])+"/freeze", nil, &k, true); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "key %s frozen: state %s\n", k.Name, k.State)
		fmt.Fprintf(c.stdout, "next       it signs nothing until the quorum approves: keyrack keys enable %s\n", k.Name)
		return nil
	case "export":
		return c.keyExport(ctx, args)
	case "account-key":
		return c.putAccountKey(ctx, args)
	case "replicate":
		fs, yes := c.stepFlags("keys replicate")
		blob := fs.String("blob", "", "the key wrapped to this appliance's import key")
		rest, err := parseAll(fs, args)
		if err != nil || len(rest) != 1 || *blob == "" {
			return usageErr("keys replicate NAME -blob FILE (the key wrapped to this appliance's import key)")
		}
		b, err := os.ReadFile(*blob)
		if err != nil {
			return err
		}
		return c.propose(ctx, "POST", "/v1/keys/"+url.PathEscape(rest[0])+"/replicate", wire.ReplicateRequest{Blob: b}, true, *yes)
	}
	return usageErr("unknown keys command " + sub)
}

// keyExport prints (or writes) what registering a key with the Brand
// Store takes: the account-key-request the key signed, its key id, its
// public key and the constraints matching its roles.
func (c *cli) keyExport(ctx context.Context, args []string) error {
	const use = "keys export NAME -account-id ACCOUNT [-o FILE]"
	fs := flag.NewFlagSet("keys export", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	account := fs.String("account-id", "", "the brand account the key is registered to")
	out := fs.String("o", "", "write the account-key-request to this file instead of printing it")
	rest, err := parseAll(fs, args)
	if err != nil || len(rest) != 1 || *account == "" {
		return usageErr(use)
	}
	var x wire.KeyExport
	path := "/v1/keys/" + url.PathEscape(rest[0]) + "/export?account-id=" + url.QueryEscape(*account)
	if _, err := c.call(ctx, "GET", path, nil, &x, true); err != nil {
		return err
	}
	if *out != "" {
		if err := writeNew(*out, []byte(x.AccountKeyRequest), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "wrote %s (the account-key-request)\n", *out)
	} else {
		fmt.Fprint(c.stdout, x.AccountKeyRequest)
		if !strings.HasSuffix(x.AccountKeyRequest, "\n") {
			fmt.Fprintln(c.stdout)
		}
	}
	constraints, err := json.Marshal(x.Constraints)
	if err != nil {
		return err
	}
	// The public key as `snap export-key NAME` prints it: lines of base64.
	fmt.Fprintf(c.stdout, "sign-key-sha3-384 %s\npublic-key (as snap export-key prints it):\n%s\nconstraints %s\n",
		x.KeyID, strings.TrimSpace(x.PublicKey), constraints)
	if x.Note != "" {
		fmt.Fprintf(c.stdout, "note: %s\n", x.Note)
	}
	return nil
}

// putAccountKey gives the appliance the account-key assertion the Brand
// Store issued for a key, as the assertion's bytes.
func (c *cli) putAccountKey(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("keys account-key", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	file := fs.String("file", "", "the account-key assertion the Brand Store issued")
	rest, err := parseAll(fs, args)
	if err != nil || len(rest) != 1 || *file == "" {
		return usageErr("keys account-key NAME -file FILE")
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	var ans wire.AccountKeyStored
	if _, err := c.callBody(ctx, "PUT", "/v1/keys/"+url.PathEscape(rest[0])+"/account-key", "application/x.ubuntu.assertion", data, &ans, true); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "key %s: account-key of account %s stored\n", ans.Name, ans.AccountID)
	return nil
}

// keyCeremony proposes generate, import or upload. Flags may follow NAME.
func (c *cli) keyCeremony(ctx context.Context, sub string, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageErr("keys " + sub + " NAME -role TYPE[=REGEX,...] ...")
	}
	name := args[0]
	fs, yes := c.stepFlags("keys " + sub)
	var roles roleFlag
	fs.Var(&roles, "role", "assertion type the key may sign, with model-name regexes: serial=dev-.*,other (repeat)")
	blob := fs.String("blob", "", "wrapped key file made by `keyrack wrap` (import)")
	keyID := fs.String("key-id", "", "the wrapped key's sign-key-sha3-384, as `keyrack wrap` printed it (import)")
	keyFile := fs.String("key", "", "armored OpenPGP secret key or PEM private key (upload)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageErr("keys " + sub + " NAME -role ...")
	}
	if len(roles) == 0 {
		return usageErr("at least one -role is required: roles are fixed when a key enters the appliance")
	}
	rolesJSON, err := json.Marshal(roles)
	if err != nil {
		return fmt.Errorf("encoding the roles: %w", err)
	}
	req := wire.KeyRequest{Name: name, Roles: rolesJSON}
	switch sub {
	case "import":
		if *blob == "" || *keyID == "" {
			return usageErr("keys import NAME -blob FILE -key-id SHA3-384 -role ... (-key-id: the sign-key-sha3-384 keyrack wrap printed)")
		}
		b, err := os.ReadFile(*blob)
		if err != nil {
			return err
		}
		req.Blob, req.KeyID = b, *keyID
	case "upload":
		if *keyFile == "" {
			return usageErr("keys upload NAME -key FILE -role ...")
		}
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return err
		}
		defer clear(b)
		req.Key = b
		fmt.Fprintln(c.stderr, "note: upload sends the plaintext key to the appliance; `keyrack wrap` + `keys import` never exposes it")
	}
	return c.propose(ctx, "POST", "/v1/keys/"+sub, req, true, *yes)
}

// stepFlags is the flag set of a command that proposes, with its -yes.
func (c *cli) stepFlags(name string) (*flag.FlagSet, *bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	return fs, fs.Bool("yes", false, "sign without asking for confirmation")
}

func (c *cli) proposals(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "show" {
		fs := flag.NewFlagSet("proposals show", flag.ContinueOnError)
		fs.SetOutput(c.stderr)
		asJSON := fs.Bool("json", false, "print the appliance's JSON answer as it is (all its fields)")
		rest, err := parseAll(fs, args[1:])
		if err != nil || len(rest) != 1 {
			return usageErr("proposals show ID [-json]")
		}
		var p wire.Proposal
		if printed, err := c.listing(ctx, "/v1/proposals/"+url.PathEscape(rest[0]), *asJSON, &p); err != nil || printed {
			return err
		}
		b, _ := json.MarshalIndent(showProposal(p), "", "  ")
		fmt.Fprintln(c.stdout, string(b))
		return nil
	}
	fs := flag.NewFlagSet("proposals", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	state := fs.String("state", "pending", "pending, executed, failed, cancelled, expired, or all")
	asJSON := fs.Bool("json", false, "print the appliance's JSON answer instead of the table")
	if err := fs.Parse(args); err != nil {
		return usageErr("proposals [-state S] [-json] | proposals show ID [-json]")
	}
	q := ""
	if *state != "all" {
		q = "?state=" + url.QueryEscape(*state)
	}
	var ans wire.ProposalList
	if printed, err := c.listing(ctx, "/v1/proposals"+q, *asJSON, &ans); err != nil || printed {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tAPPROVALS\tPROPOSER\tSUMMARY")
	for _, p := range ans.Proposals {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\n", p.ID, p.State, len(p.Approvals), p.Quorum, p.Proposer, p.Summary)
	}
	return tw.Flush()
}

func (c *cli) officers(ctx context.Context, args []string) error {
	const use = "officers [list] [-json] | officers add NAME -pubkey FILE [-cert CERT.pem] | officers remove NAME | officers rotate -pubkey FILE"
	if sub, rest := subcommand(args, "list"); sub == "list" {
		asJSON, err := c.listFlags("officers list", rest)
		if err != nil {
			return err
		}
		var ans wire.OfficerList
		if printed, err := c.listing(ctx, "/v1/officers", asJSON, &ans); err != nil || printed {
			return err
		}
		fmt.Fprintf(c.stdout, "quorum %d\n", ans.Quorum)
		for _, o := range ans.Officers {
			state := "active"
			if o.RevokedAt != nil {
				state = "removed " + o.RevokedAt.Format(time.RFC3339)
			}
			fp := o.KeyFP
			if fp == "" {
				fp = "(no key)"
			}
			fmt.Fprintf(c.stdout, "%s\t%s\t%s\n", o.Name, state, fp)
		}
		return nil
	}
	sub := args[0]
	fs, yes := c.stepFlags("officers " + sub)
	pubFile := fs.String("pubkey", "", "the officer's public key file (authorized_keys form: FILE.pub of keyrack officer keygen, or ssh-add -L)")
	certFile := fs.String("cert", "", "add: the officer's TLS client certificate (PEM), bound to them where the appliance requires one")
	rest, err := parseAll(fs, args[1:])
	if err != nil || sub != "add" && *certFile != "" {
		return usageErr(use)
	}
	switch {
	case sub == "add" && len(rest) == 1 && *pubFile != "":
		pub, err := c.officerPublicKey(*pubFile)
		if err != nil {
			return err
		}
		req := wire.OfficerRequest{Name: rest[0], PublicKey: pub}
		if *certFile != "" {
			if req.ClientCertSHA256, err = officerkey.CertFileSHA256(*certFile); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "client certificate sha256 %s\n", req.ClientCertSHA256)
		}
		return c.propose(ctx, "POST", "/v1/officers", req, false, *yes)
	case sub == "rotate" && len(rest) == 0 && *pubFile != "":
		pub, err := c.officerPublicKey(*pubFile)
		if err != nil {
			return err
		}
		return c.propose(ctx, "POST", "/v1/officers/rotate", wire.OfficerRequest{PublicKey: pub}, false, *yes)
	case sub == "remove" && len(rest) == 1 && *pubFile == "":
		return c.propose(ctx, "DELETE", "/v1/officers/"+url.PathEscape(rest[0]), nil, false, *yes)
	}
	return usageErr(use)
}

// officerPublicKey reads an officer's public key file, prints its
// fingerprint for the officers to compare with its owner's, and returns
// it as the appliance records it.
func (c *cli) officerPublicKey(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the public key: %w", err)
	}
	pub, err := officerkey.ParsePublicKey(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(c.stdout, "key        %s (%s)\n", officerkey.Fingerprint(pub), pub.Type())
	return officerkey.Authorized(pub), nil
}

const clientsCreateUsage = "clients create NAME -kind device-service|signing -brand B -model M ... [-type T ...] [-cert FILE] [limit flags]"

func (c *cli) clients(ctx context.Context, args []string) error {
	switch sub, rest := subcommand(args, "list"); {
	case sub == "list":
		asJSON, err := c.listFlags("clients list", rest)
		if err != nil {
			return err
		}
		var ans wire.ClientList
		if printed, err := c.listing(ctx, "/v1/clients", asJSON, &ans); err != nil || printed {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tKIND\tBRAND\tMODELS\tTYPES\tSTATE\tLIMITS")
		for _, x := range ans.Clients {
			state := "active"
			if x.RevokedAt != nil {
				state = "revoked"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.Name, x.Kind, x.Brand, strings.Join(x.Models, ","), strings.Join(x.Types, ","),
				state, limitsText(x))
		}
		return tw.Flush()
	case len(args) >= 2 && args[0] == "create":
		fs, yes := c.stepFlags("clients create")
		kind := fs.String("kind", "", "device-service (serials; its key goes into gadget images, so it is public) or signing (model, system-user, preseed; a secret, used over TLS)")
		brand := fs.String("brand", "", "brand account id")
		certFile := fs.String("cert", "", "signing: the client's TLS client certificate (PEM); it must connect with it")
		var models, types listFlag
		fs.Var(&models, "model", "model name the client may ask for (repeat)")
		fs.Var(&types, "type", "assertion type the client may ask for (repeat; a device-service client's is serial)")
		limits := limitFlags(fs)
		if err := fs.Parse(args[2:]); err != nil || len(fs.Args()) > 0 {
			return usageErr(clientsCreateUsage)
		}
		req := wire.ClientRequest{Name: args[1], Kind: *kind, Brand: *brand, Models: models, Types: types}
		if l := limits(fs); l != nil {
			req.Limits = l
		}
		if *certFile != "" {
			var err error
			if req.ClientCertSHA256, err = officerkey.CertFileSHA256(*certFile); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "client certificate sha256 %s\n", req.ClientCertSHA256)
		}
		return c.propose(ctx, "POST", "/v1/clients", req, false, *yes)
	case len(args) >= 2 && args[0] == "limits":
		fs, yes := c.stepFlags("clients limits")
		limits := limitFlags(fs)
		rest, err := parseAll(fs, args[1:])
		if err != nil || len(rest) != 1 {
			return usageErr("clients limits NAME [-su-model M ...] [-max-validity-days N] [-password=BOOL] [-ssh-keys=BOOL] [-serials-required=BOOL]")
		}
		l := limits(fs)
		if l == nil {
			return usageErr("clients limits NAME: say which limits change (-su-model, -max-validity-days, -password, -ssh-keys, -serials-required)")
		}
		return c.propose(ctx, "POST", "/v1/clients/"+url.PathEscape(rest[0])+"/limits", l, false, *yes)
	case len(args) >= 2 && args[0] == "revoke":
		// At once, on one officer's word: nothing is signed. -yes is
		// accepted for the scripts written when this was a proposal.
		fs, _ := c.stepFlags("clients revoke")
		rest, err := parseAll(fs, args[1:])
		if err != nil || len(rest) != 1 {
			return usageErr("clients revoke NAME")
		}
		var cl wire.Client
		if _, err := c.call(ctx, "POST", "/v1/clients/"+url.PathEscape(rest[0])+"/revoke", nil, &cl, true); err != nil {
			return err
		}
		when := ""
		if cl.RevokedAt != nil {
			when = " at " + cl.RevokedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(c.stdout, "API client %s revoked%s: its key is refused from now on\n", cl.Name, when)
		return nil
	}
	return usageErr("clients [list] | " + clientsCreateUsage + " | clients limits NAME ... | clients revoke NAME")
}

// limitFlags adds a signing client's limit flags to fs; the function it
// returns gives the limits the command line set (nil when none), so that
// what is not given stays the default (create) or as it is (limits).
func limitFlags(fs *flag.FlagSet) func(*flag.FlagSet) *wire.ClientLimits {
	var models listFlag
	fs.Var(&models, "su-model", "signing: a model system-user and preseed assertions may name (repeat; default: the client's models)")
	days := fs.Int("max-validity-days", 0, "signing: the longest a system-user may be valid, in days (default 365)")
	password := fs.Bool("password", false, "signing: a system-user may carry a password (default false)")
	sshKeys := fs.Bool("ssh-keys", true, "signing: a system-user may carry SSH keys (default true)")
	serials := fs.Bool("serials-required", true, "signing: a system-user must name serials (default true)")
	return func(fs *flag.FlagSet) *wire.ClientLimits {
		var l wire.ClientLimits
		set := false
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "su-model":
				l.Models, set = models, true
			case "max-validity-days":
				l.MaxValidityDays, set = *days, true
			case "password":
				l.Password, set = password, true
			case "ssh-keys":
				l.SSHKeys, set = sshKeys, true
			case "serials-required":
				l.SerialsRequired, set = serials, true
			}
		})
		if !set {
			return nil
		}
		return &l
	}
}

// limitsText is a signing client's limits in a table cell.
func limitsText(x wire.Client) string {
	l := x.Limits
	if l == nil {
		return "-"
	}
	var parts []string
	parts = append(parts, "models="+strings.Join(l.Models, ","), fmt.Sprintf("until<=%dd", l.MaxValidityDays))
	creds := []string{}
	if l.Password != nil && *l.Password {
		creds = append(creds, "password")
	}
	if l.SSHKeys != nil && *l.SSHKeys {
		creds = append(creds, "ssh-keys")
	}
	parts = append(parts, strings.Join(creds, "+"))
	if l.SerialsRequired != nil && *l.SerialsRequired {
		parts = append(parts, "serials-required")
	}
	if x.ClientCertSHA256 != "" {
		parts = append(parts, "cert="+x.ClientCertSHA256[:12])
	}
	return strings.Join(parts, " ")
}

func (c *cli) audit(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "verify" {
		return c.auditVerify(ctx, args[1:])
	}
	return c.auditList(ctx, args)
}

// quorum prints the quorum on record, or proposes a new one (quorum set N).
func (c *cli) quorum(ctx context.Context, args []string) error {
	const use = "quorum | quorum set N [-yes]"
	if len(args) == 0 {
		var ans wire.OfficerList
		if _, err := c.call(ctx, "GET", "/v1/officers", nil, &ans, true); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "quorum %d\n", ans.Quorum)
		return nil
	}
	if args[0] != "set" {
		return usageErr(use)
	}
	fs, yes := c.stepFlags("quorum set")
	rest, err := parseAll(fs, args[1:])
	if err != nil || len(rest) != 1 {
		return usageErr(use)
	}
	n, err := strconv.Atoi(rest[0])
	if err != nil {
		return usageErr("quorum set N: N is a number of officers")
	}
	return c.propose(ctx, "POST", "/v1/quorum", wire.QuorumRequest{Quorum: n}, false, *yes)
}

// serials proposes that a serial may move to a new device key (serials
// rekey), where the device cannot prove it holds the old one.
func (c *cli) serials(ctx context.Context, args []string) error {
	const use = "serials rekey BRAND MODEL SERIAL -device-key SHA3-384 [-yes]"
	if len(args) == 0 || args[0] != "rekey" {
		return usageErr(use)
	}
	fs, yes := c.stepFlags("serials rekey")
	key := fs.String("device-key", "", "the new device key's sha3-384 (its serial-request's device-key-sha3-384)")
	rest, err := parseAll(fs, args[1:])
	if err != nil || len(rest) != 3 || *key == "" {
		return usageErr(use)
	}
	return c.propose(ctx, "POST", "/v1/serials/rekey", wire.RekeyRequest{Brand: rest[0], Model: rest[1], Serial: rest[2], DeviceKey: *key}, false, *yes)
}

func compact(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
