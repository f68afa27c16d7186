package snapd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/tomb.v2"

	"github.com/snapcore/snapd/asserts"
	"github.com/snapcore/snapd/bootloader"
	"github.com/snapcore/snapd/bootloader/bootloadertest"
	"github.com/snapcore/snapd/dirs"
	"github.com/snapcore/snapd/logger"
	"github.com/snapcore/snapd/overlord"
	"github.com/snapcore/snapd/overlord/assertstate"
	"github.com/snapcore/snapd/overlord/auth"
	"github.com/snapcore/snapd/overlord/configstate"
	"github.com/snapcore/snapd/overlord/devicestate"
	"github.com/snapcore/snapd/overlord/devicestate/devicestatetest"
	"github.com/snapcore/snapd/overlord/hookstate"
	"github.com/snapcore/snapd/overlord/hookstate/ctlcmd"
	"github.com/snapcore/snapd/overlord/snapstate"
	"github.com/snapcore/snapd/overlord/snapstate/sequence"
	"github.com/snapcore/snapd/overlord/state"
	"github.com/snapcore/snapd/release"
	"github.com/snapcore/snapd/snap"

	// snapd's daemon links the interface definitions, which is what
	// reading a snap's snap.yaml needs to check its plugs and slots.
	_ "github.com/snapcore/snapd/interfaces/builtin"
)

const gadgetName = "dev-gadget"

// gadgetYaml declares the prepare-device hook: snapd's device manager only
// runs the hook (and so only reads the gadget's device-service config
// after it) when the gadget has one.
const gadgetYaml = `name: dev-gadget
version: "1.0"
type: gadget
hooks:
  prepare-device:
`

// memBackend keeps the last state snapd checkpointed, so a "restart" can
// read the state back the way snapd does on boot.
type memBackend struct {
	mu   sync.Mutex
	data []byte
}

func (b *memBackend) Checkpoint(data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data = append([]byte(nil), data...)
	return nil
}

// EnsureBefore is snapd asking for an early Ensure; the device's loop
// calls Ensure every 50 ms anyway.
func (b *memBackend) EnsureBefore(time.Duration) {}

// prepareDevice is what the gadget's prepare-device hook runs: snapctl
// command lines, each run through snapd's own snapctl implementation.
type prepareDevice [][]string

// device is a Ubuntu Core 18 device as snapd's managers see it after
// seeding: model dev-brand/dev-model in the assertion database (with its
// signing chain up to the test root snapd trusts), the gadget installed,
// no serial yet. Its managers are snapd's own (devicestate, hookstate,
// assertstate, configstate) on a state engine this test drives.
type device struct {
	t       *testing.T
	root    string
	backend *memBackend
	st      *state.State
	se      *overlord.StateEngine
	devMgr  *devicestate.DeviceManager
	hook    prepareDevice

	logBuf *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newDevice sets up a fresh device root and boots snapd's managers on it.
// seed are the assertions a seeded device holds (brand account, its key,
// the model).
func newDevice(t *testing.T, seed []asserts.Assertion, hook prepareDevice) *device {
	t.Helper()
	d := &device{t: t, root: t.TempDir(), backend: &memBackend{}, hook: hook, logBuf: &syncBuffer{}}

	// snapd's paths are global: every device gets its own root, and the
	// subtests run one after the other.
	dirs.SetRootDir(d.root)
	t.Cleanup(func() { dirs.SetRootDir("") })
	t.Cleanup(release.MockOnClassic(false))
	// A core18 model has a kernel, so snapd marks the boot successful
	// through the bootloader; a device has one, this one is snapd's mock.
	bootloader.Force(bootloadertest.Mock("mock", t.TempDir()))
	t.Cleanup(func() { bootloader.Force(nil) })
	l, err := logger.New(d.logBuf, logger.DefaultFlags, nil)
	if err != nil {
		t.Fatal(err)
	}
	logger.SetLogger(l)
	t.Cleanup(func() {
		logger.SetLogger(logger.NullLogger)
		if t.Failed() {
			t.Logf("snapd log:\n%s", d.logBuf.String())
		}
	})

	for _, dir := range []string{dirs.SnapRunDir, dirs.SnapdStateDir(dirs.GlobalRootDir), dirs.SnapDeviceDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The file snapd writes once it has restricted cloud-init on a seeded
	// core device: with it there, snapd does not look for cloud-init on
	// the machine running the test.
	cloudCfg := filepath.Join(d.root, "etc/cloud/cloud.cfg.d/zzzz_snapd.cfg")
	if err := os.MkdirAll(filepath.Dir(cloudCfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cloudCfg, []byte("# restricted by snapd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(dirs.SnapMountDir, gadgetName, "1", "meta")
	if err := os.MkdirAll(meta, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(meta, "snap.yaml"), []byte(gadgetYaml), 0o644); err != nil {
		t.Fatal(err)
	}
	// The installed snap file beside its mounted tree (snapd reads the
	// tree; it checks the file is there).
	if err := os.MkdirAll(dirs.SnapBlobDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(snap.MountFile(gadgetName, snap.R(1)), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	d.st = state.New(d.backend)
	d.st.Lock()
	d.st.Set("seeded", true)
	snapstate.Set(d.st, gadgetName, &snapstate.SnapState{
		SnapType: string(snap.TypeGadget),
		Active:   true,
		Current:  snap.R(1),
		Sequence: sequence.SnapSequence{Revisions: []*sequence.RevisionSideState{
			sequence.NewRevisionSideState(&snap.SideInfo{RealName: gadgetName, Revision: snap.R(1)}, nil)}},
	})
	err = devicestatetest.SetDevice(d.st, &auth.DeviceState{Brand: brandID, Model: modelID})
	d.st.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	d.boot(seed)
	return d
}

// boot starts snapd's managers on the device's state, as snapd does when
// it starts. seed, on the first boot, goes into the assertion database
// before the managers start up, as seeding left it.
func (d *device) boot(seed []asserts.Assertion) {
	t := d.t
	t.Helper()
	runner := state.NewTaskRunner(d.st)
	assertMgr, err := assertstate.Manager(d.st, runner)
	if err != nil {
		t.Fatal(err)
	}
	hookMgr, err := hookstate.Manager(d.st, runner)
	if err != nil {
		t.Fatal(err)
	}
	if err := configstate.Init(d.st, hookMgr); err != nil {
		t.Fatal(err)
	}
	// No store: registration with a custom device service needs none, and
	// snapd asks the store for nothing here when the appliance's answer is
	// complete.
	devMgr, err := devicestate.Manager(d.st, hookMgr, runner, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.se = overlord.NewStateEngine(d.st)
	d.se.AddManager(assertMgr)
	d.se.AddManager(hookMgr)
	d.se.AddManager(devMgr)
	d.se.AddManager(runner)
	d.st.Lock()
	for _, a := range seed {
		if err := assertstate.Add(d.st, a); err != nil {
			d.st.Unlock()
			t.Fatalf("seeding %s: %v", a.Type().Name, err)
		}
	}
	d.st.Unlock()
	if err := d.se.StartUp(); err != nil {
		t.Fatal(err)
	}
	d.devMgr = devMgr
	// The hook: snapd runs the gadget's prepare-device executable, which
	// calls snapctl; here snapctl's implementation runs in the hook's
	// context directly.
	t.Cleanup(hookstate.MockRunHook(func(ctx *hookstate.Context, _ *tomb.Tomb) ([]byte, error) {
		if ctx.InstanceName() != gadgetName || ctx.HookName() != "prepare-device" {
			return nil, fmt.Errorf("unexpected hook %s of %s", ctx.HookName(), ctx.InstanceName())
		}
		var out []byte
		for _, args := range d.hook {
			stdout, stderr, err := ctlcmd.Run(ctx, args, 0)
			out = append(append(out, stdout...), stderr...)
			if err != nil {
				return out, fmt.Errorf("snapctl %s: %v", args[0], err)
			}
		}
		return out, nil
	}))
	t.Cleanup(func() {
		if d.se != nil {
			d.se.Stop()
			d.se = nil
		}
	})
}

// restart stops snapd and starts it again from the state it last
// checkpointed, as after a reboot, with the gadget's hook now hook. A new
// snapd tries to register at once; a running one only after its backoff
// (5 minutes, doubling).
func (d *device) restart(hook prepareDevice) {
	t := d.t
	t.Helper()
	d.se.Stop()
	d.se = nil
	d.backend.mu.Lock()
	data := d.backend.data
	d.backend.mu.Unlock()
	st, err := state.ReadState(d.backend, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	d.st = st
	d.hook = hook
	d.boot(nil)
}

// waitRegistration drives snapd's Ensure loop until a become-operational
// change newer than after is ready, and returns it.
func (d *device) waitRegistration(after string, timeout time.Duration) *state.Change {
	t := d.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ensureErrs := map[string]bool{}
	for {
		if err := d.se.Ensure(); err != nil {
			ensureErrs[err.Error()] = true
		}
		d.st.Lock()
		var chg *state.Change
		for _, c := range d.st.Changes() {
			if c.Kind() == "become-operational" && c.ID() != after && (chg == nil || idLess(chg.ID(), c.ID())) {
				chg = c
			}
		}
		ready := chg != nil && chg.IsReady()
		d.st.Unlock()
		if ready {
			return chg
		}
		select {
		case <-ctx.Done():
			for e := range ensureErrs {
				t.Logf("snapd Ensure: %s", e)
			}
			if chg != nil {
				d.st.Lock()
				t.Logf("change %s: %s\n%s", chg.ID(), chg.Status(), taskLogs(chg))
				d.st.Unlock()
			}
			t.Fatalf("no finished registration after %s", timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// idLess orders snapd's change ids (decimal strings).
func idLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

func taskLogs(chg *state.Change) string {
	var b strings.Builder
	for _, tk := range chg.Tasks() {
		fmt.Fprintf(&b, "  %s %s: %s\n", tk.Kind(), tk.Status(), strings.Join(tk.Log(), "\n    "))
	}
	return b.String()
}

// identity is what the device ends a registration with.
type identity struct {
	keyID  string
	serial *asserts.Serial // nil when not registered
}

func (d *device) identity() identity {
	t := d.t
	t.Helper()
	d.st.Lock()
	defer d.st.Unlock()
	dev, err := devicestatetest.Device(d.st)
	if err != nil {
		t.Fatal(err)
	}
	id := identity{keyID: dev.KeyID}
	if dev.Serial == "" {
		return id
	}
	serial, err := d.devMgr.Serial()
	if err != nil {
		t.Fatalf("device state has serial %q but: %v", dev.Serial, err)
	}
	if serial.Serial() != dev.Serial {
		t.Fatalf("device state has serial %q, its assertion %q", dev.Serial, serial.Serial())
	}
	// snapd's own database checks the signature chain again: the
	// serial's key up to the test root it trusts.
	if err := assertstate.DB(d.st).Check(serial); err != nil {
		t.Fatalf("snapd's assertion database does not accept the serial: %v", err)
	}
	id.serial = serial
	return id
}
