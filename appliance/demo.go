package appliance

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyrack/keyrack/hsm"
)

// DemoSerialKeyLabel is the token label of the dev appliance's serial key.
const DemoSerialKeyLabel = "dev-serial"

// EnsureDemo sets up the development appliance's demo data: a serial
// signing key generated inside the dev token. It finds what an earlier start
// made, so restarting keeps the same keys.
func EnsureDemo(ctx context.Context, mod *hsm.Module) (key *hsm.Key, created bool, err error) {
	k, err := mod.FindKeyByLabel(ctx, DemoSerialKeyLabel)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, hsm.ErrKeyNotFound) {
		return nil, false, fmt.Errorf("looking for the demo key: %w", err)
	}
	k, err = mod.GenerateRSA(ctx, hsm.KeySpec{Label: DemoSerialKeyLabel, Bits: 4096, Usage: hsm.UsageSign})
	if err != nil {
		return nil, false, fmt.Errorf("generating the demo key: %w", err)
	}
	return k, true, nil
}
