package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
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
	msg := fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code)
	if e.Code == "client-certificate-required" {
		msg += "; present yours with -cert FILE -cert-key FILE (or KEYRACK_CERT, KEYRACK_CERT_KEY)"
	}
	return msg
}

// tlsFiles are the run's TLS options: the CA the appliance's certificate
// is checked against, and the officer's client certificate and its key.
type tlsFiles struct {
	ca, cert, certKey string
}

// client is the run's one HTTP client, made at its first use (offline
// commands never need it, and a bad -ca does not stop them): the
// appliance's certificate checked against -ca (the system roots without
// it), the officer's client certificate presented on every connection.
func (c *cli) client() (*http.Client, error) {
	if c.httpClient != nil {
		return c.httpClient, nil
	}
	tc, err := c.tls.config()
	if err != nil {
		return nil, err
	}
	if tc.Certificates != nil && !strings.HasPrefix(strings.ToLower(c.url), "https://") {
		return nil, fmt.Errorf("a client certificate is presented over TLS only, and %s is not an https:// URL", c.url)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	c.httpClient = &http.Client{Transport: tr}
	return c.httpClient, nil
}

// config is the TLS configuration of the options. The private key file
// is read here and only kept in the configuration.
func (f tlsFiles) config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca: no PEM certificate in %s", f.ca)
		}
		tc.RootCAs = pool
	}
	switch {
	case f.cert == "" && f.certKey == "":
	case f.cert == "" || f.certKey == "":
		return nil, usageErr("-cert FILE and -cert-key FILE go together (the client certificate and its private key)")
	default:
		certPEM, err := os.ReadFile(f.cert)
		if err != nil {
			return nil, fmt.Errorf("-cert: %w", err)
		}
		keyPEM, err := os.ReadFile(f.certKey)
		if err != nil {
			return nil, fmt.Errorf("-cert-key: %w", err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		clear(keyPEM)
		if err != nil {
			// X509KeyPair's errors name no key material.
			return nil, fmt.Errorf("-cert %s, -cert-key %s: %w", f.cert, f.certKey, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// send sends a request with the run's client: for an officer call (auth),
// logged in first with the session in Authorization.
func (c *cli) send(ctx context.Context, method, path, contentType string, body []byte, auth bool) (*http.Response, error) {
	hc, err := c.client()
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth {
		tok, err := c.login(ctx)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, c.unreachable(err)
	}
	return resp, nil
}

// unreachable says that the appliance could not be reached, and what to
// do about a certificate the run does not trust.
func (c *cli) unreachable(err error) error {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) && c.tls.ca == "" {
		return fmt.Errorf("appliance at %s unreachable: %w (trust its CA with -ca FILE or KEYRACK_CA)", c.url, err)
	}
	return fmt.Errorf("appliance at %s unreachable: %w", c.url, err)
}

// call sends a request and decodes a JSON answer into out (a
// *json.RawMessage takes the answer as it came). Any non-2xx answer
// becomes an *apiError carrying the appliance's message.
func (c *cli) call(ctx context.Context, method, path string, in, out any, auth bool) (int, error) {
	var body []byte
	ctype := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body, ctype = b, "application/json"
	}
	return c.callBody(ctx, method, path, ctype, body, out, auth)
}

// callBody is call with a body of its own type.
func (c *cli) callBody(ctx context.Context, method, path, contentType string, body []byte, out any, auth bool) (int, error) {
	resp, err := c.send(ctx, method, path, contentType, body, auth)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, answerError(resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("unreadable answer: %w", err)
		}
	}
	return resp.StatusCode, nil
}

// answerError is the error a non-2xx answer carries.
func answerError(status int, data []byte) error {
	var eb wire.ErrorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error.Message != "" {
		return &apiError{status, eb.Error.Code, eb.Error.Message}
	}
	return &apiError{status, "unexpected", strings.TrimSpace(string(data))}
}

// printJSON prints an answer as the appliance gave it, indented (-json).
func (c *cli) printJSON(raw json.RawMessage) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("unreadable answer: %w", err)
	}
	b.WriteByte('\n')
	_, err := c.stdout.Write(b.Bytes())
	return err
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
