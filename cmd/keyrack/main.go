// Command keyrack is the security officers' tool for a keyrack appliance.
//
// Offline, on the officer's own machine:
//
//	keyrack wrap -import-key import.pem -fingerprint HEX -in brand.asc -out brand.blob
//
// Against the appliance (-url or KEYRACK_URL; the officer credential from
// KEYRACK_OFFICER_TOKEN or -token-file):
//
//	keyrack status
//	keyrack import-key [-o import.pem]
//	keyrack keys [list] | keys show NAME
//	keyrack keys generate NAME -role serial=MODEL-REGEX ...
//	keyrack keys import NAME -blob brand.blob -role ...
//	keyrack keys upload NAME -key brand.asc -role ...
//	keyrack keys disable|enable|destroy NAME
//	keyrack proposals [-state pending] | proposals show ID
//	keyrack approve ID | cancel ID
//	keyrack officers [list] | officers add NAME | officers remove NAME
//	keyrack clients [list] | clients create NAME -brand B -model M -type serial | clients revoke NAME
//	keyrack models [list] | models set BRAND MODEL -key serial=KEY ...
//	keyrack log [-model M] [-serial S] [-csv]
//	keyrack audit [-after N] [-limit N]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance/wire"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: keyrack [-url URL] [-token-file FILE] <command> [args]

offline:
  wrap -import-key FILE -fingerprint HEX -in KEYFILE -out BLOB
                         wrap a brand key to an appliance's import key

appliance:
  status                 appliance and token health
  import-key [-o FILE]   the appliance's import key (PEM) and fingerprint
  keys [list]            key records
  keys show NAME         one key, with its token object
  keys generate NAME -role TYPE[=REGEX,...] ...
  keys import NAME -blob FILE -role ...
  keys upload NAME -key FILE -role ...     (armored OpenPGP or PEM; prefer wrap+import)
  keys disable|enable|destroy NAME
  keys replicate NAME -blob FILE           put an imported key into this appliance's token too
  proposals [-state S]   ceremony proposals; proposals show ID
  approve ID             approve a proposal
  cancel ID              withdraw a pending proposal
  officers [list] | officers add NAME | officers remove NAME
  clients [list] | clients create NAME -brand B -model M ... -type T ... | clients revoke NAME
  models [list] | models set BRAND MODEL -key TYPE=KEY ... [-serial-source request|assign] [-serial-prefix P] [-allow-rekey]
  log [-type T] [-model M] [-serial S] [-client C] [-since T] [-until T] [-csv]
                         the signing log
  audit [-after N] [-limit N]
  audit verify [-db PATH] walk the audit hash chain; names the first broken event
  device register -api-key-file FILE -brand B -model M [-serial S]
                         play a device registering as snapd does (for trying it out)
  version
`

type cli struct {
	url       string
	tokenFile string
	timeout   time.Duration
	stdout    io.Writer
	stderr    io.Writer
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyrack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &cli{stdout: stdout, stderr: stderr}
	fs.StringVar(&c.url, "url", envOr("KEYRACK_URL", "http://127.0.0.1:8080"), "appliance API base URL (env KEYRACK_URL)")
	fs.StringVar(&c.tokenFile, "token-file", os.Getenv("KEYRACK_TOKEN_FILE"), "file holding the officer credential (env KEYRACK_TOKEN_FILE; or KEYRACK_OFFICER_TOKEN)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "request timeout (key generation takes a while)")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
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
	case "import-key":
		err = c.importKey(ctx, rest[1:])
	case "keys":
		err = c.keys(ctx, rest[1:])
	case "proposals":
		err = c.proposals(ctx, rest[1:])
	case "approve", "cancel":
		if len(rest) != 2 {
			err = usageErr(rest[0] + " ID")
		} else {
			err = c.ceremony(ctx, "POST", "/v1/proposals/"+rest[1]+"/"+rest[0], nil, false)
		}
	case "officers":
		err = c.officers(ctx, rest[1:])
	case "clients":
		err = c.clients(ctx, rest[1:])
	case "audit":
		err = c.audit(ctx, rest[1:])
	case "models":
		err = c.models(ctx, rest[1:])
	case "log":
		err = c.signingLog(ctx, rest[1:])
	case "device":
		err = c.deviceCmd(ctx, rest[1:])
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
