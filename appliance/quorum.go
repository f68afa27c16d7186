package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// The quorum is on record in the store, where a quorum.set ceremony
// changes it: the configuration's officers.quorum is only the first value,
// recorded when the store is new. So no one changes M by editing a file
// and restarting, and appliances sharing a store share their M.

// KindQuorumSet changes the quorum.
const KindQuorumSet = "quorum.set"

const quorumSetting = "officers_quorum"

type quorumPayload struct {
	Quorum int `json:"quorum"`
}

// ensureQuorum records the configured quorum in a new store, and says
// when the configuration differs from the quorum on record.
func (a *Appliance) ensureQuorum(ctx context.Context) error {
	var onRecord int
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		v, err := tx.Setting(quorumSetting)
		if errors.Is(err, store.ErrNotFound) {
			onRecord = a.cfg.Officers.Quorum
			if err := tx.SetSetting(quorumSetting, strconv.Itoa(onRecord)); err != nil {
				return err
			}
			_, err = tx.Audit("system", "quorum.initial", strconv.Itoa(onRecord), "ok", nil)
			return err
		}
		if err != nil {
			return err
		}
		onRecord, err = strconv.Atoi(v)
		return err
	})
	if err != nil {
		return err
	}
	if onRecord != a.cfg.Officers.Quorum {
		a.log.Warn("officers.quorum in the configuration differs from the quorum on record, which applies: change it with a quorum.set ceremony",
			"configured", a.cfg.Officers.Quorum, "on_record", onRecord)
	}
	return nil
}

// quorumIn is the quorum on record, read in tx.
func quorumIn(tx *store.Tx) (int, error) {
	v, err := tx.Setting(quorumSetting)
	if err != nil {
		return 0, fmt.Errorf("the quorum on record: %w", err)
	}
	return strconv.Atoi(v)
}

// ProposeQuorum proposes a new quorum, to be approved by the current one.
func (a *Appliance) ProposeQuorum(ctx context.Context, officer string, req wire.QuorumRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindQuorumSet, &err)
	return a.propose(ctx, officer, KindQuorumSet, fmt.Sprintf("set the quorum to %d officers", req.Quorum), quorumPayload{Quorum: req.Quorum})
}

// checkQuorumValue refuses a quorum the active officers could not meet,
// or that lets one officer act alone outside a dev appliance.
func (a *Appliance) checkQuorumValue(tx *store.Tx, raw []byte) (int, error) {
	var p quorumPayload
	if err := json.Unmarshal(raw, &p); err != nil {
		return 0, err
	}
	if p.Quorum < 1 || p.Quorum > 16 || p.Quorum < 2 && !a.cfg.Dev {
		return 0, badInput("invalid-quorum", fmt.Sprintf("quorum %d: 2..16 officers (1 only on a dev appliance)", p.Quorum))
	}
	n, err := tx.CountActiveOfficers()
	if err != nil {
		return 0, err
	}
	if p.Quorum > n {
		return 0, conflict("quorum-unreachable", fmt.Sprintf("a quorum of %d with %d active officers could never be met", p.Quorum, n))
	}
	return p.Quorum, nil
}
