package hsm

import (
	"fmt"

	"github.com/miekg/pkcs11"
)

// InitToken initializes a fresh token in the first slot that holds an
// uninitialized token, with the given label, SO PIN and user PIN. It refuses
// to touch a token that already carries label: initializing erases a token,
// and a ceremony must never overwrite keys. The PINs are zeroed on return.
//
// It loads the module on its own, so it must not be called while a Module
// for the same library is open in this process.
func InitToken(path, label string, soPIN, userPIN []byte) error {
	defer zero(soPIN)
	defer zero(userPIN)
	if label == "" || len(label) > 32 {
		return fmt.Errorf("%w: token label must be 1 to 32 bytes", ErrInvalidArgument)
	}
	if len(soPIN) == 0 || len(userPIN) == 0 {
		return fmt.Errorf("%w: empty PIN", ErrInvalidArgument)
	}
	if err := claimPath(path); err != nil {
		return err
	}
	defer releasePath(path)
	p := pkcs11.New(path)
	if p == nil {
		return fmt.Errorf("hsm: cannot load PKCS#11 module %s", path)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil {
		return wrapCKR("initialize", err)
	}
	defer func() { _ = p.Finalize() }()

	if _, err := findSlot(p, label, ""); err == nil {
		return fmt.Errorf("hsm: %w: %q", ErrTokenExists, label)
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return wrapCKR("list slots", err)
	}
	free, found := uint(0), false
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free, found = s, true
			break
		}
	}
	if !found {
		return fmt.Errorf("hsm: no slot with an uninitialized token")
	}
	if err := p.InitToken(free, string(soPIN), label); err != nil {
		return wrapCKR("init token", err)
	}
	// Slots may be renumbered by initialization: find the token again.
	slot, err := findSlot(p, label, "")
	if err != nil {
		return err
	}
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return wrapCKR("open session", err)
	}
	defer func() { _ = p.CloseSession(sh) }()
	if err := p.Login(sh, pkcs11.CKU_SO, string(soPIN)); err != nil {
		return wrapCKR("SO login", err)
	}
	if err := p.InitPIN(sh, string(userPIN)); err != nil {
		return wrapCKR("init user PIN", err)
	}
	if err := p.Logout(sh); err != nil {
		return wrapCKR("SO logout", err)
	}
	return nil
}
