package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance/wire"
)

type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code)
}

// call sends a request and decodes a JSON answer into out. Any non-2xx
// answer becomes an *apiError carrying the appliance's message.
func (c *cli) call(ctx context.Context, method, path string, in, out any, auth bool) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, body)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		tok, err := c.login(ctx)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("appliance at %s unreachable: %w", c.url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		var eb wire.ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Message != "" {
			return resp.StatusCode, &apiError{resp.StatusCode, eb.Error.Code, eb.Error.Message}
		}
		return resp.StatusCode, &apiError{resp.StatusCode, "unexpected", strings.TrimSpace(string(data))}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("unreadable answer: %w", err)
		}
	}
	return resp.StatusCode, nil
}

// withProgress prints dots to stderr while a long call runs.
func (c *cli) withProgress(what string, fn func() error) error {
	fmt.Fprintf(c.stderr, "%s ", what)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprint(c.stderr, ".")
			}
		}
	}()
	err := fn()
	close(done)
	if err != nil {
		fmt.Fprintln(c.stderr, " failed")
	} else {
		fmt.Fprintln(c.stderr, " done")
	}
	return err
}

// ceremony submits a ceremony step (an approval, a cancellation) and says
// what happened.
func (c *cli) ceremony(ctx context.Context, method, path string, in any, slow bool) error {
	var ans wire.CeremonyAnswer
	call := func() error {
		_, err := c.call(ctx, method, path, in, &ans, true)
		return err
	}
	var err error
	if slow {
		err = c.withProgress("submitting (an approval that completes a key ceremony waits for the token)", call)
	} else {
		err = call()
	}
	if err != nil {
		return err
	}
	c.printAnswer(ans)
	return nil
}

// printAnswer says where a ceremony step left its proposal.
func (c *cli) printAnswer(ans wire.CeremonyAnswer) {
	p := ans.Proposal
	fmt.Fprintf(c.stdout, "proposal %s: %s\n", p.ID, p.Summary)
	fmt.Fprintf(c.stdout, "state      %s (%d of %d approvals: %s)\n", p.State, len(p.Approvals), p.Quorum, strings.Join(p.Approvals, ", "))
	if p.Result != "" {
		fmt.Fprintf(c.stdout, "result     %s\n", p.Result)
	}
	if p.State == "pending" {
		fmt.Fprintf(c.stdout, "next       another officer runs: keyrack approve %s (before %s)\n", p.ID, p.ExpiresAt.Format(time.RFC3339))
	}
	if ans.Credential != "" {
		// The CLI's own note rather than ans.CredentialNote: it also tells
		// the officer what to do with the credential now.
		fmt.Fprintf(c.stdout, "credential %s\n           shown once: the appliance keeps only its hash; hand it over now\n", ans.Credential)
	}
}
