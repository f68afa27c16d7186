// Command keyrack is the security officers' tool for a keyrack appliance.
//
//	keyrack [-url URL] status     show the appliance's and its token's health
//	keyrack version
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyrack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", envOr("KEYRACK_URL", "http://127.0.0.1:8080"), "appliance API base URL (env KEYRACK_URL)")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: keyrack [-url URL] <command>\n\ncommands:\n  status    appliance and token health\n  version   print the version")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	switch fs.Arg(0) {
	case "status":
		return status(ctx, strings.TrimRight(*url, "/"), stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, appliance.Version)
		return 0
	case "":
		fs.Usage()
		return 2
	default:
		fmt.Fprintf(stderr, "keyrack: unknown command %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// status prints the health the appliance reports; exit 1 when it is not up.
func status(ctx context.Context, base string, stdout, stderr io.Writer) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/health", nil)
	if err != nil {
		fmt.Fprintf(stderr, "keyrack: %v\n", err)
		return 2
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "keyrack: appliance at %s unreachable: %v\n", base, err)
		return 1
	}
	defer resp.Body.Close()
	var h struct {
		Status  string `json:"status"`
		Version string `json:"version"`
		Token   struct {
			Up         bool   `json:"up"`
			Label      string `json:"label"`
			Serial     string `json:"serial"`
			Model      string `json:"model"`
			Sessions   int    `json:"sessions"`
			InUse      int    `json:"sessions_in_use"`
			Recoveries uint64 `json:"recoveries"`
			Error      string `json:"error"`
		} `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&h); err != nil {
		fmt.Fprintf(stderr, "keyrack: unreadable answer from %s (HTTP %d): %v\n", base, resp.StatusCode, err)
		return 1
	}
	fmt.Fprintf(stdout, "appliance  %s (version %s)\n", h.Status, h.Version)
	if h.Token.Up {
		fmt.Fprintf(stdout, "token      up: %s (serial %s, %s)\n", h.Token.Label, h.Token.Serial, h.Token.Model)
	} else {
		fmt.Fprintf(stdout, "token      DOWN: %s\n", h.Token.Error)
	}
	fmt.Fprintf(stdout, "sessions   %d in use of %d; %d recoveries\n", h.Token.InUse, h.Token.Sessions, h.Token.Recoveries)
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}
