package policy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckKindTypes(t *testing.T) {
	for _, tc := range []struct {
		kind  ClientKind
		types []string
		msg   string // "" for accepted
	}{
		{DeviceService, []string{"serial"}, ""},
		{Signing, []string{"model", "system-user", "preseed"}, ""},
		{DeviceService, []string{"serial", "model"}, "in every gadget image"},
		{Signing, []string{"system-user", "serial"}, "in every gadget image"},
		{DeviceService, []string{"preseed"}, "a device-service client may ask for serial, not preseed"},
		{Signing, []string{"serial"}, "a signing client may ask for model, system-user, preseed, not serial"},
		{Signing, []string{"account-key"}, "unknown assertion type"},
	} {
		err := CheckKindTypes(tc.kind, tc.types)
		if tc.msg == "" && err != nil || tc.msg != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("%s %v: %v (want %q)", tc.kind, tc.types, err, tc.msg)
		}
	}
	if _, err := ParseKind("both"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseKind(both): %v", err)
	}
}

func TestLimits(t *testing.T) {
	scope, err := NewClientScope("brand-x", []string{"m-1", "m-2"}, []string{"system-user"})
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultLimits(scope.Models())
	if err := d.Validate(scope); err != nil || d.Password || !d.SSHKeys || !d.SerialsRequired || d.MaxValidity != 365*24*time.Hour {
		t.Fatalf("defaults %+v: %v", d, err)
	}
	for _, bad := range []Limits{
		{Models: []string{"m-3"}, MaxValidity: time.Hour, SSHKeys: true},
		{Models: []string{"m-1"}, MaxValidity: MaxMaxValidity + time.Hour, SSHKeys: true},
		{Models: []string{"m-1"}, MaxValidity: time.Hour},
		{MaxValidity: time.Hour, SSHKeys: true},
	} {
		if err := bad.Validate(scope); !errors.Is(err, ErrInvalid) {
			t.Errorf("limits %+v: %v", bad, err)
		}
	}
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	ok := SystemUserRequest{Models: []string{"m-1"}, HasSSHKeys: true, Serials: 1, Since: now, Until: now.AddDate(0, 6, 0)}
	if err := d.CheckSystemUser(ok, now); err != nil {
		t.Fatal(err)
	}
	for rule, change := range map[string]func(*SystemUserRequest){
		RuleLimitValidity: func(r *SystemUserRequest) { r.Until = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC) },
		RuleLimitPassword: func(r *SystemUserRequest) { r.HasPassword = true },
		RuleLimitSerials:  func(r *SystemUserRequest) { r.Serials = 0 },
	} {
		r := ok
		change(&r)
		var ref *Refusal
		if err := d.CheckSystemUser(r, now); !errors.As(err, &ref) || ref.Rule != rule {
			t.Errorf("%s: %v", rule, err)
		}
	}
	narrow := d
	narrow.Models, narrow.SSHKeys, narrow.Password = []string{"m-2"}, false, true
	var ref *Refusal
	if err := narrow.CheckSystemUser(ok, now); !errors.As(err, &ref) || ref.Rule != RuleLimitModels {
		t.Errorf("models: %v", err)
	}
	r := ok
	r.Models = []string{"m-2"}
	if err := narrow.CheckSystemUser(r, now); !errors.As(err, &ref) || ref.Rule != RuleLimitSSHKeys {
		t.Errorf("ssh keys: %v", err)
	}
}
