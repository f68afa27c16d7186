package main

// The officer's side of authentication: the key (a file, or ssh-agent),
// logging in with it, making one, and signing ceremony steps once the
// officer has seen what they sign. No key material, passphrase or session
// token is ever printed or put in an error.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/user"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/wire"
)

// terminal is where keyrack asks the officer something.
type terminal interface {
	// readLine shows prompt and reads one line, echoed.
	readLine(prompt string) (string, error)
	// readSecret shows prompt and reads one line without echo.
	readSecret(prompt string) ([]byte, error)
}

// ttyTerminal asks on the terminal that is keyrack's standard input,
// prompting on out.
type ttyTerminal struct {
	in  *os.File
	out io.Writer
}

// stdinTerminal is the terminal on standard input, or nil when standard
// input is not a terminal.
func stdinTerminal(out io.Writer) terminal {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil
	}
	return ttyTerminal{in: os.Stdin, out: out}
}

func (t ttyTerminal) readLine(prompt string) (string, error) {
	fmt.Fprint(t.out, prompt)
	// One byte at a time: nothing read past the line is lost to a buffer.
	var line []byte
	b := make([]byte, 1)
	for len(line) < 4096 {
		n, err := t.in.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
			continue
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimSpace(string(line)), nil
}

func (t ttyTerminal) readSecret(prompt string) ([]byte, error) {
	fmt.Fprint(t.out, prompt)
	b, err := term.ReadPassword(int(t.in.Fd()))
	fmt.Fprintln(t.out)
	return b, err
}

// close releases what the run held (the ssh-agent connection).
func (c *cli) close() {
	for _, f := range c.closers {
		f()
	}
	c.closers = nil
}

var errNoKey = errors.New("no officer key: give -key FILE (or KEYRACK_OFFICER_KEY), or -agent to sign with ssh-agent")

// officerSigner is the officer's key, loaded at the first use.
func (c *cli) officerSigner() (ssh.Signer, error) {
	if c.signer != nil {
		return c.signer, nil
	}
	var s ssh.Signer
	var err error
	if c.agent {
		s, err = c.agentSigner()
	} else {
		s, err = c.fileSigner()
	}
	if err != nil {
		return nil, err
	}
	c.signer = s
	return s, nil
}

// fileSigner reads the private key file -key names.
func (c *cli) fileSigner() (ssh.Signer, error) {
	if c.keyFile == "" {
		return nil, errNoKey
	}
	data, err := os.ReadFile(c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the officer key: %w", err)
	}
	defer clear(data)
	if _, err := officerkey.ParsePublicKey(data); err == nil {
		return nil, fmt.Errorf("%s is a public key: -key takes the private key file (with -agent, the public key names the agent's key)", c.keyFile)
	}
	s, err := officerkey.LoadSigner(data, c.passphraseFor(c.keyFile))
	switch {
	case errors.Is(err, officerkey.ErrBadKey):
		return nil, fmt.Errorf("%s: %w (a FIDO2 sk- key or a PIV key signs through ssh-agent: use -agent)", c.keyFile, err)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", c.keyFile, err)
	}
	return s, nil
}

// passphraseFor asks the passphrase of the key file path: from
// KEYRACK_KEY_PASSPHRASE, or on the terminal.
func (c *cli) passphraseFor(path string) func() ([]byte, error) {
	return func() ([]byte, error) {
		if v := os.Getenv("KEYRACK_KEY_PASSPHRASE"); v != "" {
			return []byte(v), nil
		}
		if c.tty == nil {
			return nil, fmt.Errorf("%w, asked on a terminal, and there is none (scripts: set KEYRACK_KEY_PASSPHRASE)", officerkey.ErrPassphrase)
		}
		return c.tty.readSecret("passphrase for " + path + ": ")
	}
}

// agentSigner finds the officer's key in ssh-agent: the one whose public
// key -key (or KEYRACK_OFFICER_PUBKEY) names, or the agent's only
// suitable key.
func (c *cli) agentSigner() (ssh.Signer, error) {
	var pub ssh.PublicKey
	if c.keyFile != "" {
		var err error
		if pub, err = readPublicKey(c.keyFile); err != nil {
			return nil, err
		}
	}
	s, closeAgent, err := officerkey.AgentSigner(os.Getenv("SSH_AUTH_SOCK"), pub)
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, closeAgent)
	return s, nil
}

// readPublicKey reads an officer's public key file (authorized_keys
// form). Given FILE, a private key's file or its path, it reads FILE.pub.
func readPublicKey(path string) (ssh.PublicKey, error) {
	pub, err := parsePublicKeyFile(path)
	if err != nil && !strings.HasSuffix(path, ".pub") {
		if p, perr := parsePublicKeyFile(path + ".pub"); perr == nil {
			return p, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w (with -agent, -key names the key's public key file, FILE.pub)", err)
	}
	return pub, nil
}

func parsePublicKeyFile(path string) (ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the public key: %w", err)
	}
	defer clear(data) // it may be a private key file
	pub, err := officerkey.ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}

// login logs the officer in, once per run: the appliance's challenge,
// signed with the officer's key, opens a session whose token authorizes
// the run's officer calls.
func (c *cli) login(ctx context.Context) (string, error) {
	if c.session != "" {
		return c.session, nil
	}
	s, err := c.officerSigner()
	if err != nil {
		return "", err
	}
	fp := officerkey.Fingerprint(s.PublicKey())
	var ch wire.LoginChallenge
	if _, err := c.call(ctx, "POST", "/v1/login/challenge", wire.LoginRequest{PublicKey: officerkey.Authorized(s.PublicKey())}, &ch, false); err != nil {
		return "", fmt.Errorf("logging in with key %s: %w", fp, err)
	}
	sig, err := officerkey.Sign(s, officerkey.DomainLogin, []byte(ch.Content))
	if err != nil {
		return "", fmt.Errorf("logging in with key %s: %w", fp, err)
	}
	var sess wire.Session
	if _, err := c.call(ctx, "POST", "/v1/login", wire.LoginAnswer{ID: ch.ID, Signature: sig}, &sess, false); err != nil {
		return "", fmt.Errorf("logging in with key %s: %w", fp, err)
	}
	if sess.Token == "" {
		return "", fmt.Errorf("logging in with key %s: the appliance answered without a session", fp)
	}
	c.session = sess.Token
	return c.session, nil
}

// errDeclined is the officer's "no" to "sign this?".
var errDeclined = errors.New("not signed")

// canConfirm refuses, before anything is sent, a ceremony step that
// would wait for a confirmation nobody can give.
func (c *cli) canConfirm(yes bool) error {
	if yes || c.yes || c.tty != nil {
		return nil
	}
	return errors.New("a ceremony step is signed only after you confirm its content on a terminal, and there is none: run keyrack on a terminal, or pass -yes to sign without asking")
}

// propose sends a proposal, then signs it as the proposer's approval
// (signAndApprove). A proposal the officer declines to sign is cancelled.
func (c *cli) propose(ctx context.Context, method, path string, in any, slow, yes bool) error {
	yes = yes || c.yes
	if err := c.canConfirm(yes); err != nil {
		return err
	}
	var ans wire.CeremonyAnswer
	if _, err := c.call(ctx, method, path, in, &ans, true); err != nil {
		return err
	}
	p := ans.Proposal
	if p.State != "pending" {
		c.printAnswer(ans)
		return nil
	}
	err := c.signAndApprove(ctx, p, p.ID, slow, yes)
	var ae *apiError
	switch {
	case errors.Is(err, errDeclined):
		var cancelled wire.CeremonyAnswer
		if _, cerr := c.call(ctx, "POST", "/v1/proposals/"+url.PathEscape(p.ID)+"/cancel", nil, &cancelled, true); cerr != nil {
			return fmt.Errorf("not signed, and cancelling proposal %s failed: %w (it is pending without your approval: keyrack cancel %s)", p.ID, cerr, p.ID)
		}
		return fmt.Errorf("not signed: proposal %s cancelled", p.ID)
	case err != nil && !errors.As(err, &ae):
		return fmt.Errorf("%w\nproposal %s awaits your approval: keyrack approve %s signs it, keyrack cancel %s withdraws it", err, p.ID, p.ID, p.ID)
	}
	return err
}

// approveCmd is `approve ID`: the proposal as the appliance has it, its
// content shown, confirmed, signed and approved.
func (c *cli) approveCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("approve", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	yes := fs.Bool("yes", false, "sign without asking for confirmation")
	rest, err := parseAll(fs, args)
	if err != nil || len(rest) != 1 {
		return usageErr("approve ID [-yes]")
	}
	id := rest[0]
	if err := c.canConfirm(*yes); err != nil {
		return err
	}
	var p wire.Proposal
	if _, err := c.call(ctx, "GET", "/v1/proposals/"+url.PathEscape(id), nil, &p, true); err != nil {
		return err
	}
	return c.signAndApprove(ctx, p, id, false, *yes || c.yes)
}

// signAndApprove shows the content of proposal p (which must be proposal
// id), asks the officer to confirm it unless yes, signs it in the
// approval domain and sends the approval.
func (c *cli) signAndApprove(ctx context.Context, p wire.Proposal, id string, slow, yes bool) error {
	if p.State != "pending" {
		return fmt.Errorf("proposal %s is %s: there is nothing to approve", id, p.State)
	}
	pretty, err := proposalContent(p, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "signing proposal %s, exactly this content:\n%s\n", p.ID, pretty)
	if !yes {
		if c.tty == nil {
			return c.canConfirm(false)
		}
		answer, err := c.tty.readLine("sign this? [y/N] ")
		if err != nil {
			return fmt.Errorf("reading your answer: %w", err)
		}
		if a := strings.ToLower(answer); a != "y" && a != "yes" {
			return errDeclined
		}
	}
	s, err := c.officerSigner()
	if err != nil {
		return err
	}
	sig, err := officerkey.Sign(s, officerkey.DomainApproval, []byte(p.Content))
	if err != nil {
		return fmt.Errorf("signing proposal %s with key %s: %w", p.ID, officerkey.Fingerprint(s.PublicKey()), err)
	}
	return c.ceremony(ctx, "POST", "/v1/proposals/"+url.PathEscape(p.ID)+"/approve", wire.ApproveRequest{Signature: sig}, slow)
}

// proposalContent checks that p's content, what an approval signs, is the
// content of proposal id, and returns it indented for the officer to read.
func proposalContent(p wire.Proposal, id string) (string, error) {
	if p.Content == "" {
		return "", fmt.Errorf("the appliance sent no content to sign for proposal %s", id)
	}
	var head struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal([]byte(p.Content), &head); err != nil {
		return "", fmt.Errorf("proposal %s: unreadable content: %w", id, err)
	}
	if head.ID != id || p.ID != id || head.Kind != p.Kind {
		return "", fmt.Errorf("refusing to sign: the content the appliance gave for proposal %s (%s) is that of proposal %q (%s)", id, p.Kind, head.ID, head.Kind)
	}
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(p.Content), "", "  "); err != nil {
		return "", fmt.Errorf("proposal %s: unreadable content: %w", id, err)
	}
	return b.String(), nil
}

// officerCmd is `officer keygen`: an officer makes their key on their
// own machine; only FILE.pub ever goes to the appliance.
func (c *cli) officerCmd(args []string) error {
	const use = "officer keygen -o FILE [-comment C] [-passphrase]"
	if len(args) == 0 || args[0] != "keygen" {
		return usageErr(use)
	}
	fs := flag.NewFlagSet("officer keygen", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	out := fs.String("o", "", "the private key file to write (mode 0600); the public key goes to FILE.pub")
	comment := fs.String("comment", defaultComment(), "the key's comment")
	withPass := fs.Bool("passphrase", false, "encrypt the key file with a passphrase, asked twice on the terminal (or env KEYRACK_KEY_PASSPHRASE)")
	rest, err := parseAll(fs, args[1:])
	if err != nil || len(rest) != 0 || *out == "" {
		return usageErr(use)
	}
	pubPath := *out + ".pub"
	for _, p := range []string{*out, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists: refusing to overwrite it", p)
		}
	}
	var pass []byte
	if *withPass {
		if pass, err = c.newPassphrase(); err != nil {
			return err
		}
		defer clear(pass)
	}
	priv, pub, err := officerkey.Generate(*comment, pass)
	if err != nil {
		return err
	}
	defer clear(priv)
	pk, err := officerkey.ParsePublicKey(pub)
	if err != nil {
		return err
	}
	if err := writeNew(*out, priv, 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pub, 0o644); err != nil {
		os.Remove(*out)
		return err
	}
	fmt.Fprintf(c.stdout, "wrote %s (your officer key: it never leaves this machine) and %s (the public key the appliance records)\n", *out, pubPath)
	fmt.Fprintf(c.stdout, "fingerprint %s\n", officerkey.Fingerprint(pk))
	return nil
}

// newPassphrase is a new key's passphrase: KEYRACK_KEY_PASSPHRASE, or
// asked twice on the terminal.
func (c *cli) newPassphrase() ([]byte, error) {
	if v := os.Getenv("KEYRACK_KEY_PASSPHRASE"); v != "" {
		return []byte(v), nil
	}
	if c.tty == nil {
		return nil, errors.New("-passphrase asks the passphrase on a terminal, and there is none (scripts: set KEYRACK_KEY_PASSPHRASE)")
	}
	first, err := c.tty.readSecret("passphrase for the new key: ")
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase: %w", err)
	}
	again, err := c.tty.readSecret("the same passphrase again: ")
	defer clear(again)
	if err != nil {
		clear(first)
		return nil, fmt.Errorf("reading the passphrase: %w", err)
	}
	switch {
	case len(first) == 0:
		return nil, errors.New("empty passphrase: leave out -passphrase for a key file without one")
	case !bytes.Equal(first, again):
		clear(first)
		return nil, errors.New("the passphrases differ: nothing written")
	}
	return first, nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("writing %s (refusing to overwrite): %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// defaultComment is user@host, as ssh-keygen has it.
func defaultComment() string {
	name := "officer"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return name + "@" + h
	}
	return name
}
