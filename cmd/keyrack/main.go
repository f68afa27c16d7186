// Command keyrack is the security officers' tool for a keyrack appliance.
//
// Offline, on the officer's own machine:
//
//	keyrack officer keygen -o officer.key [-comment C] [-passphrase]
//	keyrack wrap -import-key import.pem -fingerprint HEX -in brand.asc -out brand.blob
//
// An officer is the SSH key they made (keygen writes FILE and FILE.pub;
// ssh-keygen's Ed25519, ECDSA and RSA-3072+ keys do too, and a key held by
// ssh-agent, FIDO2 sk- keys included). The appliance has only the public
// key. Against the appliance (-url or KEYRACK_URL), keyrack logs in once
// per run by signing a challenge with the officer's key: -key FILE (or
// KEYRACK_OFFICER_KEY; a passphrase is asked on the terminal, or taken
// from KEYRACK_KEY_PASSPHRASE), or -agent (KEYRACK_AGENT=1) to sign with
// the ssh-agent at SSH_AUTH_SOCK, -key FILE.pub (or KEYRACK_OFFICER_PUBKEY)
// naming the key when the agent holds several.
//
// Every ceremony step is signed: a command that proposes sends the
// proposal, shows the exact content an approval signs and asks "sign
// this?" on the terminal before signing it as the proposer's approval;
// approve ID does the same for another officer's proposal. -yes signs
// without asking (scripts); without a terminal and without -yes, keyrack
// refuses instead of waiting.
//
// Over HTTPS, -ca FILE (KEYRACK_CA) is the CA the appliance's certificate
// is checked against (the system roots without it), and -cert FILE
// -cert-key FILE (KEYRACK_CERT, KEYRACK_CERT_KEY) the officer's TLS
// client certificate, presented on every call of the run.
//
//	keyrack status
//	keyrack import-key [-o import.pem]
//	keyrack keys [list] [-json] | keys show NAME [-json]
//	keyrack keys generate NAME -role serial=MODEL-REGEX ...
//	keyrack keys import NAME -blob brand.blob -key-id SHA3-384 -role ...
//	keyrack keys upload NAME -key brand.asc -role ...
//	keyrack keys disable|enable|destroy NAME
//	keyrack keys freeze NAME
//	keyrack keys export NAME -account-id ACCOUNT [-o FILE] | keys account-key NAME -file FILE
//	keyrack proposals [-state pending] [-json] | proposals show ID [-json]
//	keyrack approve ID | cancel ID
//	keyrack officers [list] [-json] | officers add NAME -pubkey FILE [-cert CERT.pem] | officers remove NAME
//	keyrack officers rotate -pubkey NEWFILE
//	keyrack quorum | quorum set N
//	keyrack clients [list] [-json] | clients create NAME -kind device-service -brand B -model M | clients revoke NAME
//	keyrack clients create NAME -kind signing -brand B -model M -type model ... [-cert FILE] [limit flags]
//	keyrack clients limits NAME [-su-model M] [-max-validity-days N] [-password=B] [-ssh-keys=B] [-serials-required=B]
//	keyrack models [list] [-json] | models set BRAND MODEL -key serial=KEY ...
//	keyrack serials rekey BRAND MODEL SERIAL -device-key SHA3-384
//	keyrack backup -o FILE
//	keyrack log [-model M] [-serial S] [-csv | -json]
//	keyrack audit [-after N] [-limit N] [-json] | audit verify [-db PATH | -file EXPORT] [-since-head FILE]
//	keyrack audit head | audit export -o FILE | audit-key [-o FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keyrack/keyrack/appliance/wire"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: keyrack [-url URL] [-key FILE | -agent [-key FILE.pub]] [-ca FILE] [-cert FILE -cert-key FILE] [-yes] <command> [args]

officer key: -key FILE (env KEYRACK_OFFICER_KEY), the private key file; its
passphrase is asked on the terminal (env KEYRACK_KEY_PASSPHRASE for scripts).
Or -agent (env KEYRACK_AGENT=1): sign with ssh-agent (SSH_AUTH_SOCK), -key
FILE.pub (env KEYRACK_OFFICER_PUBKEY) picking the key if it holds several.
Commands marked * are ceremony steps: keyrack shows the content it signs and
asks "sign this? [y/N]"; -yes (global, or after the command) signs without
asking.
TLS: -ca FILE (env KEYRACK_CA) trusts this CA for the appliance's certificate
(the system roots without it); -cert FILE -cert-key FILE (env KEYRACK_CERT,
KEYRACK_CERT_KEY) present the officer's TLS client certificate.
Listings take -json: the appliance's JSON answer instead of the table.

offline:
  officer keygen -o FILE [-comment C] [-passphrase]
                         make an officer key: FILE (private, 0600) and FILE.pub
  wrap -import-key FILE -fingerprint HEX -in KEYFILE -out BLOB
                         wrap a brand key to an appliance's import key

appliance:
  status                 appliance and token health
  import-key [-o FILE]   the appliance's import key (PEM) and fingerprint
  keys [list]            key records
  keys show NAME         one key, with its token object
* keys generate NAME -role TYPE[=REGEX,...] ...
* keys import NAME -blob FILE -key-id SHA3-384 -role ...
                         (-key-id: the sign-key-sha3-384 that wrap printed)
* keys upload NAME -key FILE -role ...     (armored OpenPGP or PEM; prefer wrap+import)
* keys disable|enable|destroy NAME
  keys freeze NAME       stop a key signing at once (one officer; keys enable takes the quorum)
  keys export NAME -account-id ACCOUNT [-o FILE]
                         the account-key-request, public key and constraints for the Brand Store
  keys account-key NAME -file FILE         store the account-key the Brand Store issued
* keys replicate NAME -blob FILE           put an imported key into this appliance's token too
  proposals [-state S]   ceremony proposals; proposals show ID
* approve ID             sign and approve a proposal
  cancel ID              withdraw a pending proposal
  officers [list]        officers and their key fingerprints
* officers add NAME -pubkey FILE [-cert CERT.pem]
                         a new officer with the public key they made (and their TLS client certificate)
* officers remove NAME
* officers rotate -pubkey FILE             replace your own key (signed with the old one)
  quorum                 the quorum on record
* quorum set N           change the quorum
  clients [list]
* clients create NAME -kind device-service -brand B -model M ...
                         a factory line's client: request-ids and serials; its key goes into gadgets (public)
* clients create NAME -kind signing -brand B -model M ... -type T ... [-cert CERT.pem]
         [-su-model M ...] [-max-validity-days N] [-password] [-ssh-keys=false] [-serials-required=false]
                         a tool's client: model, system-user, preseed; a secret, over TLS
* clients limits NAME [limit flags]        change a signing client's system-user/preseed limits
  clients revoke NAME    revoke an API client at once (one officer)
  models [list]
* models set BRAND MODEL -key TYPE=KEY ... [-serial-source request|assign] [-serial-prefix P] [-allow-rekey]
* models template BRAND MODEL -file model.json
                         the model assertion (snap sign's JSON) signing clients may obtain; replaces an earlier one
  models templates       the approved model templates
* sign -k KEY [-o FILE] [-no-wait] [FILE]
                         snap sign -k KEY with a quorum: proposes the statement (FILE or stdin), waits for
                         the approvals and writes the signed assertion to stdout (or FILE)
  sign -fetch ID [-o FILE]                 the assertion an executed sign proposal made
* serials rekey BRAND MODEL SERIAL -device-key SHA3-384
                         let a serial move once to a new device key (within 7 days)
  log [-type T] [-model M] [-serial S] [-client C] [-since T] [-until T] [-csv | -json]
                         the signing log
  backup -o FILE         a consistent copy of the store, verified before it is kept (not the token's keys)
  audit [-after N] [-limit N]
  audit verify [-db PATH | -file EXPORT] [-since-head head.json]
                         walk the audit chain: links, checkpoint signatures, officers' approvals, that it
                         extends a saved head (with -db also the tables on record); names the first bad event
  audit head             the latest signed checkpoint (keyrack audit head > head.json)
  audit export -o FILE   events, checkpoints and audit keys, for audit verify -file
  audit-key [-o FILE]    the appliance's audit key and its fingerprint
  device register -api-key-file FILE -brand B -model M [-serial S] [-signing-key-file FILE | -model-file FILE]
                         play a device registering as snapd does (for trying it out)
  version
`

type cli struct {
	url     string
	keyFile string // -key: the private key file, or with -agent the public key's
	agent   bool
	yes     bool
	timeout time.Duration
	tls     tlsFiles
	stdout  io.Writer
	stderr  io.Writer
	// tty is where questions are asked (passphrases, "sign this?"): nil
	// when keyrack has no terminal.
	tty terminal

	// The officer's key and session, made at the first officer call and
	// kept for the rest of the run (officer.go).
	signer  ssh.Signer
	session string
	closers []func() error

	// httpClient is the run's one HTTP client (client.go).
	httpClient *http.Client
}

func run(args []string, stdout, stderr io.Writer) int {
	return runWith(args, stdinTerminal(stderr), stdout, stderr)
}

// runWith runs keyrack with tty as the terminal (nil for none).
func runWith(args []string, tty terminal, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyrack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &cli{stdout: stdout, stderr: stderr, tty: tty}
	defer c.close()
	fs.StringVar(&c.url, "url", envOr("KEYRACK_URL", "http://127.0.0.1:8080"), "appliance API base URL (env KEYRACK_URL)")
	fs.StringVar(&c.keyFile, "key", "", "the officer's private key file (env KEYRACK_OFFICER_KEY); with -agent, the public key file (env KEYRACK_OFFICER_PUBKEY)")
	fs.BoolVar(&c.agent, "agent", envBool("KEYRACK_AGENT"), "sign with ssh-agent at SSH_AUTH_SOCK (env KEYRACK_AGENT=1)")
	fs.BoolVar(&c.yes, "yes", false, "sign ceremony steps without asking for confirmation (scripts)")
	fs.StringVar(&c.tls.ca, "ca", os.Getenv("KEYRACK_CA"), "trust this CA (PEM) for the appliance's certificate (env KEYRACK_CA; default: the system roots)")
	fs.StringVar(&c.tls.cert, "cert", os.Getenv("KEYRACK_CERT"), "the officer's TLS client certificate, PEM (env KEYRACK_CERT)")
	fs.StringVar(&c.tls.certKey, "cert-key", os.Getenv("KEYRACK_CERT_KEY"), "the client certificate's private key, PEM (env KEYRACK_CERT_KEY)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "request timeout (key generation takes a while)")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if c.keyFile == "" {
		if c.agent {
			c.keyFile = envOr("KEYRACK_OFFICER_PUBKEY", os.Getenv("KEYRACK_OFFICER_KEY"))
		} else {
			c.keyFile = os.Getenv("KEYRACK_OFFICER_KEY")
		}
	}
	c.url = strings.TrimRight(c.url, "/")
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	var err error
	switch rest[0] {
	case "version":
		fmt.Fprintln(stdout, wire.Version)
	case "status":
		return c.status(ctx)
	case "wrap":
		err = c.wrap(rest[1:])
	case "officer":
		err = c.officerCmd(rest[1:])
	case "import-key":
		err = c.importKey(ctx, rest[1:])
	case "keys":
		err = c.keys(ctx, rest[1:])
	case "proposals":
		err = c.proposals(ctx, rest[1:])
	case "approve":
		err = c.approveCmd(ctx, rest[1:])
	case "cancel":
		if len(rest) != 2 {
			err = usageErr("cancel ID")
		} else {
			err = c.ceremony(ctx, "POST", "/v1/proposals/"+url.PathEscape(rest[1])+"/cancel", nil, false)
		}
	case "officers":
		err = c.officers(ctx, rest[1:])
	case "quorum":
		err = c.quorum(ctx, rest[1:])
	case "serials":
		err = c.serials(ctx, rest[1:])
	case "backup":
		err = c.backup(ctx, rest[1:])
	case "clients":
		err = c.clients(ctx, rest[1:])
	case "audit":
		err = c.auditCommand(ctx, rest[1:])
	case "audit-key":
		err = c.auditKey(ctx, rest[1:])
	case "models":
		err = c.models(ctx, rest[1:])
	case "log":
		err = c.signingLog(ctx, rest[1:])
	case "device":
		err = c.deviceCmd(ctx, rest[1:])
	case "sign":
		err = c.signCmd(ctx, rest[1:])
	default:
		err = usageErr(fmt.Sprintf("unknown command %q", rest[0]))
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "keyrack: %v\n\n%s", err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "keyrack: %v\n", err)
		return 1
	}
}

type usageError string

func (u usageError) Error() string { return string(u) }

func usageErr(s string) error { return usageError(s) }

// envBool reads a yes/no environment variable: 1, true or yes is yes.
func envBool(name string) bool {
	switch strings.ToLower(os.Getenv(name)) {
	case "1", "true", "yes":
		return true
	}
	return false
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// roleFlag collects -role TYPE[=REGEX,REGEX] into the roles JSON.
type roleFlag []map[string]any

func (r *roleFlag) String() string { return fmt.Sprint(*r) }

func (r *roleFlag) Set(v string) error {
	typ, models, hasModels := strings.Cut(v, "=")
	entry := map[string]any{"type": typ}
	if hasModels {
		entry["models"] = strings.Split(models, ",")
	}
	*r = append(*r, entry)
	return nil
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// parseAll parses fs's flags wherever they stand among args (the flag
// package stops at the first other argument) and returns the others.
// After "--" every argument is one of the others.
func parseAll(fs *flag.FlagSet, args []string) ([]string, error) {
	var others []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return others, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(others, rest...), nil
		}
		others = append(others, rest[0])
		args = rest[1:]
	}
}
