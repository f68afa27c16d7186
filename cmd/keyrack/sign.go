package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyrack/keyrack/appliance/wire"
)

// readStatement reads a snap sign statement from path, or stdin for "-".
func readStatement(path string) (string, error) {
	var b []byte
	var err error
	if path == "" || path == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("cannot read assertion input: %w", err)
	}
	return string(b), nil
}

// modelTemplate is `models template BRAND MODEL -file model.json`: a
// model.template ceremony for the statement snap sign takes.
func (c *cli) modelTemplate(ctx context.Context, args []string) error {
	const use = "models template BRAND MODEL -file model.json [-yes]"
	if len(args) < 2 {
		return usageErr(use)
	}
	fs, yes := c.stepFlags("models template")
	file := fs.String("file", "", "the model assertion's statement: the JSON snap sign takes")
	if err := fs.Parse(args[2:]); err != nil || *file == "" || fs.NArg() != 0 {
		return usageErr(use)
	}
	statement, err := readStatement(*file)
	if err != nil {
		return err
	}
	return c.propose(ctx, "POST", "/v1/models/templates", wire.TemplateRequest{Brand: args[0], Model: args[1], Statement: statement}, false, *yes)
}

// listTemplates is `models templates`.
func (c *cli) listTemplates(ctx context.Context, args []string) error {
	asJSON, err := c.listFlags("models templates", args)
	if err != nil {
		return err
	}
	var ans wire.TemplateList
	if printed, err := c.listing(ctx, "/v1/models/templates", asJSON, &ans); err != nil || printed {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BRAND\tMODEL\tGRADE\tLAST-REVISION\tPROPOSAL\tUPDATED")
	for _, t := range ans.Templates {
		grade, _ := t.Headers["grade"].(string)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", t.Brand, t.Model, defaultStr(grade, "-"), t.LastRevision, t.Proposal, t.UpdatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

func defaultStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

const signUse = "sign -k KEY [-o FILE] [-no-wait] [-yes] [FILE]  |  sign -fetch PROPOSAL-ID [-o FILE]"

// signCmd is `sign -k KEY FILE`: snap sign -k KEY with a quorum. It
// proposes an assertion.sign ceremony for the statement, signs the
// proposer's approval, waits for the other approvals (polling), and
// writes the signed assertion to stdout (or -o FILE), so that `keyrack
// sign -k KEY model.json > model.assert` does what snap sign does.
// Everything else goes to stderr. `sign -fetch ID` writes the assertion
// of a proposal executed earlier.
func (c *cli) signCmd(ctx context.Context, args []string) error {
	fs, yes := c.stepFlags("sign")
	key := fs.String("k", "", "the appliance's key to sign with (as snap sign -k)")
	fetch := fs.String("fetch", "", "write the assertion an executed sign proposal made")
	out := fs.String("o", "", "write the assertion to this file instead of stdout")
	noWait := fs.Bool("no-wait", false, "propose and approve, then return without waiting for the other approvals")
	rest, err := parseAll(fs, args)
	if err != nil || len(rest) > 1 || (*fetch == "") == (*key == "") {
		return usageErr(signUse)
	}
	if *fetch != "" {
		return c.writeSigned(ctx, *fetch, *out)
	}
	file := ""
	if len(rest) == 1 {
		file = rest[0]
	}
	statement, err := readStatement(file)
	if err != nil {
		return err
	}
	y := *yes || c.yes
	if err := c.canConfirm(y); err != nil {
		return err
	}
	var ans wire.CeremonyAnswer
	if _, err := c.call(ctx, "POST", "/v1/sign", wire.SignRequest{Key: *key, Statement: statement}, &ans, true); err != nil {
		return err
	}
	id := ans.Proposal.ID
	// The assertion alone goes to stdout: what the ceremony says goes to
	// stderr while the proposer approves.
	stdout := c.stdout
	c.stdout = c.stderr
	err = c.signAndApprove(ctx, ans.Proposal, id, false, y)
	c.stdout = stdout
	switch {
	case errors.Is(err, errDeclined):
		if _, cerr := c.call(ctx, "POST", "/v1/proposals/"+url.PathEscape(id)+"/cancel", nil, nil, true); cerr != nil {
			return fmt.Errorf("not signed, and cancelling proposal %s failed: %w (keyrack cancel %s)", id, cerr, id)
		}
		return fmt.Errorf("not signed: proposal %s cancelled", id)
	case err != nil:
		return fmt.Errorf("%w\nproposal %s: keyrack approve %s signs it, keyrack cancel %s withdraws it", err, id, id, id)
	}
	later := fmt.Sprintf("once the other officers approve (keyrack approve %s), keyrack sign -fetch %s writes the assertion", id, id)
	if *noWait {
		fmt.Fprintln(c.stderr, later)
		return nil
	}
	for first := true; ; first = false {
		var p wire.Proposal
		if _, err := c.call(ctx, http.MethodGet, "/v1/proposals/"+url.PathEscape(id), nil, &p, true); err != nil {
			return err
		}
		switch p.State {
		case "executed":
			return c.writeSigned(ctx, id, *out)
		case "pending", "executing":
		default:
			return fmt.Errorf("proposal %s is %s: %s", id, p.State, p.Result)
		}
		if first {
			fmt.Fprintf(c.stderr, "waiting for approvals (%d of %d: %s); %s\n", len(p.Approvals), p.Quorum, strings.Join(p.Approvals, ", "), later)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting for proposal %s: %w; %s", id, ctx.Err(), later)
		case <-time.After(2 * time.Second):
		}
	}
}

// writeSigned fetches the assertion proposal id made and writes it.
func (c *cli) writeSigned(ctx context.Context, id, path string) error {
	resp, err := c.send(ctx, http.MethodGet, "/v1/proposals/"+url.PathEscape(id)+"/assertion", "", nil, true)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return answerError(resp.StatusCode, data)
	}
	if path == "" {
		_, err = c.stdout.Write(data)
		return err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "wrote %s\n", path)
	return nil
}
