package hsm

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// Config selects a token and says how to use it.
type Config struct {
	// Path is the PKCS#11 module (shared library) to load.
	Path string
	// TokenLabel and/or TokenSerial select the token. At least one is
	// required; when both are set both must match.
	TokenLabel  string
	TokenSerial string
	// PIN is where the user PIN is read from at each login.
	PIN PINSource
	// Sessions is the number of worker sessions (default: number of CPUs).
	Sessions int
	// AcquireTimeout bounds the wait for a free session (default 5s).
	AcquireTimeout time.Duration
	// RetryInterval is the least time between two attempts to bring a
	// lost token back (default 1s).
	RetryInterval time.Duration
	// KWPMechanism is the token's RFC 5649 AES key wrap with padding
	// mechanism, used by the two-call import (default MechAESKeyWrapPad).
	KWPMechanism uint
	// IdleSigning runs every signature on dedicated threads in Linux's
	// SCHED_IDLE class: for a software token on a machine of its own (see
	// idle.go for why and what it costs).
	IdleSigning bool
}

// Observer is told how long token operations take. Nil fields are skipped.
type Observer struct {
	// Sign is called after every C_SignInit+C_Sign with its duration.
	Sign func(d time.Duration, err error)
	// AcquireWait is called with the time spent waiting for a session.
	AcquireWait func(d time.Duration)
}

func (c *Config) setDefaults() error {
	if c.Path == "" {
		return fmt.Errorf("%w: PKCS#11 module path is required", ErrInvalidArgument)
	}
	if c.TokenLabel == "" && c.TokenSerial == "" {
		return fmt.Errorf("%w: a token label or serial is required (slot numbers are not stable)", ErrInvalidArgument)
	}
	if err := c.PIN.validate(); err != nil {
		return err
	}
	if c.Sessions <= 0 {
		c.Sessions = runtime.NumCPU()
	}
	if c.AcquireTimeout <= 0 {
		c.AcquireTimeout = 5 * time.Second
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = time.Second
	}
	if c.KWPMechanism == 0 {
		c.KWPMechanism = MechAESKeyWrapPad
	}
	return nil
}

// openModules guards against two owners of one library in a process.
var openModules = struct {
	sync.Mutex
	paths map[string]bool
}{paths: map[string]bool{}}

func claimPath(path string) error {
	openModules.Lock()
	defer openModules.Unlock()
	if openModules.paths[path] {
		return fmt.Errorf("%w: %s", ErrAlreadyOpen, path)
	}
	openModules.paths[path] = true
	return nil
}

func releasePath(path string) {
	openModules.Lock()
	delete(openModules.paths, path)
	openModules.Unlock()
}

// Module is an open PKCS#11 library logged in to one token. It is safe for
// concurrent use. See the package documentation for the design.
type Module struct {
	cfg Config
	p   api

	// mu is held for reading by every token operation and for writing by
	// recovery and Close, so recovery never pulls state from under a call.
	mu     sync.RWMutex
	slot   uint
	anchor pkcs11.SessionHandle // carries the login; never lent out
	gen    uint64               // bumped by every successful (re)connect
	closed bool
	mechs  map[uint]bool // mechanisms the token offers, read at connect

	// Down state, guarded by mu (written under the write lock).
	downErr     error
	lastAttempt time.Time
	pinFailed   error // sticky: never retry a PIN the token refused

	pool chan *session
	// signJobs feeds the idle-priority signing threads (nil: sign on the
	// caller's thread); closed by Close. procs is how many Ps this
	// module needs for them (see claimIdlePs).
	signJobs chan func()
	procs    int

	recoveries atomic.Uint64
	inUse      atomic.Int64
	observer   atomic.Pointer[Observer]

	createMu sync.Mutex // serialises "check name free, then create"
}

type session struct {
	h   pkcs11.SessionHandle
	gen uint64 // generation h was opened in; 0 = not open
}

// Open loads the module, finds the token and logs in.
func Open(cfg Config) (*Module, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	p := pkcs11.New(cfg.Path)
	if p == nil {
		return nil, fmt.Errorf("hsm: cannot load PKCS#11 module %s", cfg.Path)
	}
	return openWith(cfg, p)
}

func openWith(cfg Config, p api) (*Module, error) {
	if err := claimPath(cfg.Path); err != nil {
		p.Destroy()
		return nil, err
	}
	m := &Module{cfg: cfg, p: p, pool: make(chan *session, cfg.Sessions)}
	for i := 0; i < cfg.Sessions; i++ {
		m.pool <- &session{}
	}
	if err := p.Initialize(); err != nil {
		if code, _ := ckr(err); code != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
			p.Destroy()
			releasePath(cfg.Path)
			return nil, wrapCKR("initialize", err)
		}
	}
	m.mu.Lock()
	err := m.connectLocked()
	m.mu.Unlock()
	if err == nil && cfg.IdleSigning {
		if err = m.startIdleSigners(); err != nil {
			_ = p.CloseAllSessions(m.slot)
		}
	}
	if err != nil {
		_ = p.Finalize()
		p.Destroy()
		releasePath(cfg.Path)
		return nil, err
	}
	return m, nil
}

// Close closes every session, finalizes and unloads the library. In-flight
// operations finish first.
func (m *Module) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.signJobs != nil {
		// No call is under way (they hold the read lock).
		m.stopIdleSigners()
	}
	_ = m.p.CloseAllSessions(m.slot)
	err := m.p.Finalize()
	m.p.Destroy()
	releasePath(m.cfg.Path)
	if err != nil {
		return wrapCKR("finalize", err)
	}
	return nil
}

// findSlot returns the slot whose token matches the configured label/serial.
func (m *Module) findSlot() (uint, error) {
	return findSlot(m.p, m.cfg.TokenLabel, m.cfg.TokenSerial)
}

func findSlot(p api, label, serial string) (uint, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, wrapCKR("list slots", err)
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if label != "" && trimField(ti.Label) != label {
			continue
		}
		if serial != "" && trimField(ti.SerialNumber) != serial {
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		return s, nil
	}
	return 0, fmt.Errorf("hsm: %w (label %q, serial %q)", ErrTokenNotFound, label, serial)
}

func trimField(s string) string { return strings.TrimRight(s, " \x00") }

// connectLocked finds the token, opens the anchor session and logs in. It
// bumps the generation so that every older session and handle is re-made.
// Callers hold the write lock.
func (m *Module) connectLocked() error {
	if m.pinFailed != nil {
		return m.pinFailed
	}
	slot, err := m.findSlot()
	if err != nil {
		return err
	}
	anchor, err := m.p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return wrapCKR("open session", err)
	}
	pin, err := m.cfg.PIN.read()
	if err != nil {
		_ = m.p.CloseSession(anchor)
		return err
	}
	err = m.p.Login(anchor, pkcs11.CKU_USER, string(pin))
	zero(pin)
	if err != nil {
		if code, _ := ckr(err); code != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
			_ = m.p.CloseSession(anchor)
			werr := wrapCKR("login", err)
			if errors.Is(werr, ErrPINIncorrect) {
				m.pinFailed = werr
			}
			return werr
		}
	}
	mechs := map[uint]bool{}
	if ml, err := m.p.GetMechanismList(slot); err == nil {
		for _, mech := range ml {
			mechs[mech.Mechanism] = true
		}
	}
	m.mechs = mechs
	m.slot = slot
	m.anchor = anchor
	m.gen++
	m.downErr = nil
	return nil
}

// recover brings the token back after an operation in generation seen
// failed with cause. If another caller already recovered, it returns at
// once so the caller can retry.
func (m *Module) recover(seen uint64, cause error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.gen != seen && m.downErr == nil {
		return nil
	}
	if m.pinFailed != nil {
		return m.pinFailed
	}
	if m.downErr != nil && time.Since(m.lastAttempt) < m.cfg.RetryInterval {
		return m.unavailableLocked()
	}
	m.lastAttempt = time.Now()
	m.recoveries.Add(1)

	// Sessions of the old generation are useless now; closing them also
	// drops a half-valid login so that the fresh login is clean.
	_ = m.p.CloseAllSessions(m.slot)
	err := m.connectLocked()
	if err != nil && !errors.Is(err, ErrPINIncorrect) && !errors.Is(err, ErrPINSource) {
		// The library itself may have been finalized or lost the
		// token: start it over. A token served over an RPC needs this
		// too: p11-kit-client.so keeps answering CKR_DEVICE_ERROR to
		// every call, C_GetSlotList included, after its server died,
		// and connects again only in a fresh C_Initialize (measured,
		// TestRemoteToken).
		_ = m.p.Finalize()
		if ierr := m.p.Initialize(); ierr != nil {
			err = wrapCKR("initialize", ierr)
		} else {
			err = m.connectLocked()
		}
	}
	if err != nil {
		m.downErr = fmt.Errorf("%w (after %v)", err, cause)
		if cause == nil {
			m.downErr = err
		}
		return m.unavailableLocked()
	}
	return nil
}

func (m *Module) unavailableLocked() error {
	if m.pinFailed != nil {
		return m.pinFailed
	}
	return fmt.Errorf("hsm: %w: %v", ErrTokenUnavailable, m.downErr)
}

// acquire borrows a worker session slot, waiting at most AcquireTimeout.
func (m *Module) acquire(ctx context.Context) (*session, error) {
	select {
	case s := <-m.pool:
		m.inUse.Add(1)
		m.observeWait(0)
		return s, nil
	default:
	}
	start := time.Now()
	t := time.NewTimer(m.cfg.AcquireTimeout)
	defer t.Stop()
	select {
	case s := <-m.pool:
		m.inUse.Add(1)
		m.observeWait(time.Since(start))
		return s, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("hsm: waiting for a session: %w", ctx.Err())
	case <-t.C:
		return nil, fmt.Errorf("hsm: %w (waited %v)", ErrBusy, m.cfg.AcquireTimeout)
	}
}

func (m *Module) release(s *session) {
	m.inUse.Add(-1)
	m.pool <- s
}

// do runs fn on a worker session of the current generation, recovering the
// token and retrying once when fn fails in a way recovery can cure.
func (m *Module) do(ctx context.Context, op string, fn func(sh pkcs11.SessionHandle, gen uint64) error) error {
	return m.doRetire(ctx, op, nil, fn)
}

// doRetire is do, but when fn sets *retire the worker session is closed
// after use instead of being reused, dropping any session objects a failed
// call may have left in it.
func (m *Module) doRetire(ctx context.Context, op string, retire *bool, fn func(sh pkcs11.SessionHandle, gen uint64) error) error {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("hsm: %s: %w", op, err)
		}
		if err := m.ready(); err != nil {
			return err
		}
		s, err := m.acquire(ctx)
		if err != nil {
			return err
		}
		m.mu.RLock()
		gen := m.gen
		if m.closed {
			err = ErrClosed
		} else if m.downErr != nil {
			err = m.unavailableLocked()
		} else {
			err = m.ensureSession(s, gen)
			if err == nil {
				err = fn(s.h, gen)
				if retire != nil && *retire {
					_ = m.p.CloseSession(s.h)
					s.gen = 0 // reopened on next use
					*retire = false
				}
			}
		}
		m.mu.RUnlock()
		m.release(s)
		if err == nil {
			return nil
		}
		if !needsRecovery(err) {
			return wrapCKR(op, err)
		}
		if attempt > 0 {
			return fmt.Errorf("hsm: %s: %w: %v", op, ErrTokenUnavailable, wrapCKR(op, err))
		}
		if rerr := m.recover(gen, wrapCKR(op, err)); rerr != nil {
			return rerr
		}
	}
}

// ready fails fast while the token is known to be down and a new attempt is
// not yet due; when one is due it makes it.
func (m *Module) ready() error {
	m.mu.RLock()
	closed, down, gen := m.closed, m.downErr != nil, m.gen
	due := down && time.Since(m.lastAttempt) >= m.cfg.RetryInterval
	var err error
	if down && !due {
		err = m.unavailableLocked()
	}
	m.mu.RUnlock()
	switch {
	case closed:
		return ErrClosed
	case err != nil:
		return err
	case due:
		return m.recover(gen, nil)
	}
	return nil
}

// ensureSession (re)opens s if it belongs to an older generation. Called
// with the read lock held; OpenSession is thread-safe under OS locking.
func (m *Module) ensureSession(s *session, gen uint64) error {
	if s.gen == gen {
		return nil
	}
	h, err := m.p.OpenSession(m.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return err
	}
	// The old handle died with its generation (CloseAllSessions); do not
	// close it again: the number may already belong to someone else.
	s.h, s.gen = h, gen
	return nil
}

// Status is the token's health as the appliance reports it.
type Status struct {
	Up           bool      `json:"up"`
	Label        string    `json:"label,omitempty"`
	Serial       string    `json:"serial,omitempty"`
	Manufacturer string    `json:"manufacturer,omitempty"`
	Model        string    `json:"model,omitempty"`
	Sessions     int       `json:"sessions"`
	InUse        int       `json:"sessions_in_use"`
	Recoveries   uint64    `json:"recoveries"`
	Error        string    `json:"error,omitempty"`
	CheckedAt    time.Time `json:"checked_at"`
}

// Check asks the token whether it is present and we are logged in, trying
// to recover it when it is not. It never blocks for longer than one
// recovery attempt.
func (m *Module) Check(ctx context.Context) Status {
	st := Status{Sessions: m.cfg.Sessions, CheckedAt: time.Now().UTC()}
	err := m.probe()
	if err != nil && !errors.Is(err, ErrClosed) {
		m.mu.RLock()
		gen := m.gen
		m.mu.RUnlock()
		if rerr := m.recover(gen, err); rerr == nil {
			err = m.probe()
		} else {
			err = rerr
		}
	}
	st.InUse = int(m.inUse.Load())
	st.Recoveries = m.recoveries.Load()
	if err != nil {
		st.Error = err.Error()
		return st
	}
	m.mu.RLock()
	ti, terr := m.p.GetTokenInfo(m.slot)
	m.mu.RUnlock()
	if terr != nil {
		st.Error = wrapCKR("token info", terr).Error()
		return st
	}
	st.Up = true
	st.Label = trimField(ti.Label)
	st.Serial = trimField(ti.SerialNumber)
	st.Manufacturer = trimField(ti.ManufacturerID)
	st.Model = trimField(ti.Model)
	return st
}

// probe checks the token is there and the anchor session is logged in.
func (m *Module) probe() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	if m.downErr != nil {
		return m.unavailableLocked()
	}
	if _, err := m.p.GetTokenInfo(m.slot); err != nil {
		return wrapCKR("token info", err)
	}
	si, err := m.p.GetSessionInfo(m.anchor)
	if err != nil {
		return wrapCKR("session info", err)
	}
	if si.State != pkcs11.CKS_RW_USER_FUNCTIONS && si.State != pkcs11.CKS_RO_USER_FUNCTIONS {
		return wrapCKR("session info", pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN))
	}
	return nil
}

// TokenSerial returns the serial number of the token in use (it tells
// apart appliances that share a store but not a token).
func (m *Module) TokenSerial() (string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ti, err := m.p.GetTokenInfo(m.slot)
	if err != nil {
		return "", wrapCKR("token info", err)
	}
	return trimField(ti.SerialNumber), nil
}

// Sessions returns the configured number of worker sessions.
func (m *Module) Sessions() int { return m.cfg.Sessions }

// SetObserver installs o (for metrics). Its functions run on the caller's
// goroutine: they must be cheap.
func (m *Module) SetObserver(o Observer) { m.observer.Store(&o) }

func (m *Module) observeWait(d time.Duration) {
	if o := m.observer.Load(); o != nil && o.AcquireWait != nil {
		o.AcquireWait(d)
	}
}

func (m *Module) observeSign(d time.Duration, err error) {
	if o := m.observer.Load(); o != nil && o.Sign != nil {
		o.Sign(d, err)
	}
}

// Up reports whether the token is believed to be reachable: false from a
// failed recovery until a successful one. It asks the token nothing.
func (m *Module) Up() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return !m.closed && m.downErr == nil && m.pinFailed == nil
}

// InUse returns the number of worker sessions lent out right now.
func (m *Module) InUse() int { return int(m.inUse.Load()) }

// Recoveries returns how many times the module tried to bring the token back.
func (m *Module) Recoveries() uint64 { return m.recoveries.Load() }
