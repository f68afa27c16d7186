package appliance

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyrack/keyrack/appliance/store"
)

// DemoModelStatement is the demo model's template: the `snap sign`
// statement of a core18-style dev-model (timestamp and revision are set
// by the appliance at each signature).
const DemoModelStatement = `{
  "type": "model",
  "authority-id": "dev-brand",
  "brand-id": "dev-brand",
  "series": "16",
  "model": "dev-model",
  "architecture": "amd64",
  "base": "core18",
  "gadget": "pc",
  "kernel": "pc-kernel",
  "timestamp": "2026-01-01T00:00:00Z"
}
`

// ensureDemoTemplate approves the demo model's template through the
// model.template ceremony, unless it has one.
func (a *Appliance) ensureDemoTemplate(ctx context.Context, ceremony func(kind, summary string, payload any) (Outcome, error)) error {
	err := a.db.View(ctx, func(tx *store.Tx) error {
		_, err := tx.GetModelTemplate(DemoBrand, DemoModel)
		return err
	})
	if err == nil {
		return nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	req := templateRequest(DemoBrand, DemoModel, DemoModelStatement)
	if _, err := ceremony(KindModelTemplate, "the demo model's template", req); err != nil {
		return fmt.Errorf("demo model template: %w", err)
	}
	a.log.Info("demo model template approved", "model", DemoBrand+"/"+DemoModel)
	return nil
}
