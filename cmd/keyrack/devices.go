package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/keyrack/keyrack/appliance/wire"
)

// models lists model bindings or proposes one.
func (c *cli) models(ctx context.Context, args []string) error {
	if sub, rest := subcommand(args, "list"); sub == "list" {
		asJSON, err := c.listFlags("models list", rest)
		if err != nil {
			return err
		}
		var ans wire.ModelList
		if printed, err := c.listing(ctx, "/v1/models", asJSON, &ans); err != nil || printed {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BRAND\tMODEL\tKEYS\tSERIALS\tRE-KEY")
		for _, m := range ans.Models {
			keys, _ := json.Marshal(m.Keys)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%v\n", m.Brand, m.Model, keys, m.SerialSource, m.SerialPrefix, m.AllowRekey)
		}
		return tw.Flush()
	}
	switch args[0] {
	case "template":
		return c.modelTemplate(ctx, args[1:])
	case "templates":
		return c.listTemplates(ctx, args[1:])
	}
	if args[0] != "set" || len(args) < 3 {
		return usageErr("models [list] | models set BRAND MODEL -key TYPE=KEY ... [-serial-source request|assign] [-serial-prefix P] [-allow-rekey] | models template BRAND MODEL -file model.json | models templates")
	}
	fs, yes := c.stepFlags("models set")
	var keys listFlag
	fs.Var(&keys, "key", "assertion type and the key that signs it: serial=brand-serial (repeat)")
	source := fs.String("serial-source", "request", "where serials come from: the device's request, or assigned by the appliance")
	prefix := fs.String("serial-prefix", "", "prefix of assigned serials")
	rekey := fs.Bool("allow-rekey", false, "a known serial may move to a new device key (revision + 1)")
	if err := fs.Parse(args[3:]); err != nil {
		return usageErr("models set BRAND MODEL -key TYPE=KEY ...")
	}
	km := map[string]string{}
	for _, k := range keys {
		t, name, ok := strings.Cut(k, "=")
		if !ok {
			return usageErr("-key takes TYPE=KEYNAME")
		}
		km[t] = name
	}
	return c.propose(ctx, "POST", "/v1/models", wire.ModelBinding{Brand: args[1], Model: args[2], Keys: km,
		SerialSource: *source, SerialPrefix: *prefix, AllowRekey: *rekey}, false, *yes)
}
