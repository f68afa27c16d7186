package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// ClientKind is what a factory API client is for. The two kinds never mix,
// because their keys are not kept alike: a device-service key is in every
// gadget image (snapd sends it from the gadget's device-service headers),
// so anyone with a device holds it; a signing key is a secret of one
// factory tool.
type ClientKind string

const (
	// DeviceService clients obtain request-ids and serials, and nothing
	// else: their key is public, an identifier of the factory line.
	DeviceService ClientKind = "device-service"
	// Signing clients obtain model, system-user and preseed assertions,
	// within their limits; their key is a secret, used over TLS.
	Signing ClientKind = "signing"
)

// Rules a Refusal of a client's kind or limits can name (see the Rule*
// constants in types.go: a closed set, used as metric labels).
const (
	RuleClientKind    = "client-kind"
	RuleLimitModels   = "limit-models"
	RuleLimitValidity = "limit-validity"
	RuleLimitPassword = "limit-password"
	RuleLimitSSHKeys  = "limit-ssh-keys"
	RuleLimitSerials  = "limit-serials"
)

// ParseKind returns the ClientKind named s.
func ParseKind(s string) (ClientKind, error) {
	switch k := ClientKind(s); k {
	case DeviceService, Signing:
		return k, nil
	}
	return "", fmt.Errorf("%w: unknown client kind %q (known: %s, %s)", ErrInvalid, s, DeviceService, Signing)
}

// TypesOf lists the assertion types a client of kind k may be scoped to.
func TypesOf(k ClientKind) []AssertionType {
	if k == DeviceService {
		return []AssertionType{Serial}
	}
	return []AssertionType{Model, SystemUser, Preseed}
}

// CheckKindTypes says whether a client of kind k may be scoped to types.
// Mixing serial with another type is refused with the reason: a client
// whose key is in gadget images would otherwise hand brand signatures
// (logins on devices, models) to anyone holding a device.
func CheckKindTypes(k ClientKind, types []string) error {
	for _, t := range types {
		if _, err := ParseType(t); err != nil {
			return err
		}
	}
	if others := otherThan(types, Serial); slices.Contains(types, string(Serial)) && len(others) > 0 {
		return fmt.Errorf("%w: a client cannot have %s together with %s: the device-service api-key is in every gadget image, so whoever holds a device holds it, and it must obtain nothing but serials; make a device-service client for %s and a signing client (a secret, used over TLS) for %s",
			ErrInvalid, Serial, typeList(others), Serial, typeList(others))
	}
	for _, t := range types {
		if !slices.Contains(TypesOf(k), AssertionType(t)) {
			return fmt.Errorf("%w: a %s client may ask for %s, not %s", ErrInvalid, k, typeList(TypesOf(k)), t)
		}
	}
	return nil
}

func otherThan(types []string, t AssertionType) []AssertionType {
	var out []AssertionType
	for _, s := range types {
		if AssertionType(s) != t && !slices.Contains(out, AssertionType(s)) {
			out = append(out, AssertionType(s))
		}
	}
	return out
}

// KindMismatch is the refusal of a client of kind have on an endpoint for
// kind want.
func KindMismatch(have, want ClientKind) *Refusal {
	if have == DeviceService {
		return refuse(RuleClientKind, "this is a device-service client: its api-key is in every gadget image and obtains request-ids and serials only; model, system-user and preseed assertions need a signing client")
	}
	return refuse(RuleClientKind, "this is a signing client: its key is a secret that never goes into a gadget; request-ids and serials are for device-service clients (want %s)", want)
}

// Limits bound what a signing client may obtain beyond its scope, for the
// assertions that put something on devices: a system-user is a login on
// every device it names, a preseed vouches for an image.
type Limits struct {
	// Models a system-user or preseed may name (a subset of the client's
	// models).
	Models []string
	// MaxValidity is the longest a system-user may be valid: until may be
	// at most this long after since, and after now.
	MaxValidity time.Duration
	// Password and SSHKeys say which credentials a system-user may carry.
	Password bool
	SSHKeys  bool
	// SerialsRequired refuses a system-user that names no serials (it
	// would be a login on every device of its models).
	SerialsRequired bool
}

// DefaultMaxValidity is the longest validity of a system-user when
// officers set none: a year, as snapd allows for one without models.
const DefaultMaxValidity = 365 * 24 * time.Hour

// MaxMaxValidity is the most officers may allow: even a client set up
// carelessly cannot issue a login that outlives the devices' keys' review.
const MaxMaxValidity = 5 * 365 * 24 * time.Hour

// DefaultLimits are a signing client's limits when officers set none:
// its models, a year at most, SSH keys only (a password would travel to the
// appliance and end, hashed, in an assertion anyone may read and crack
// offline), and serials required (no login on every device of a model).
func DefaultLimits(models []string) Limits {
	return Limits{Models: slices.Clone(models), MaxValidity: DefaultMaxValidity, SSHKeys: true, SerialsRequired: true}
}

// Validate checks limits against the client's scope.
func (l Limits) Validate(scope *ClientScope) error {
	if len(l.Models) == 0 {
		return fmt.Errorf("%w: limits: at least one model (of the client's: %s)", ErrInvalid, scope.modelList())
	}
	for _, m := range l.Models {
		if _, ok := slices.BinarySearch(scope.models, m); !ok {
			return fmt.Errorf("%w: limits: model %q is not one of the client's models (%s)", ErrInvalid, m, scope.modelList())
		}
	}
	if l.MaxValidity <= 0 || l.MaxValidity > MaxMaxValidity {
		return fmt.Errorf("%w: limits: the longest validity must be between 1 and %d days, not %s", ErrInvalid, MaxMaxValidity/(24*time.Hour), l.MaxValidity)
	}
	if !l.Password && !l.SSHKeys {
		return fmt.Errorf("%w: limits: allow a password, SSH keys or both (a system user with neither cannot log in)", ErrInvalid)
	}
	return nil
}

// CheckModels refuses models outside the limits (rule limit-models).
func (l Limits) CheckModels(models []string) error {
	for _, m := range models {
		if !slices.Contains(l.Models, m) {
			return refuse(RuleLimitModels, "the client's limits allow system-user and preseed assertions for %s, not %q", strings.Join(l.Models, ", "), m)
		}
	}
	return nil
}

// SystemUserRequest is what CheckSystemUser looks at.
type SystemUserRequest struct {
	Models      []string
	HasPassword bool
	HasSSHKeys  bool
	Serials     int
	Since       time.Time
	Until       time.Time
}

// CheckSystemUser decides whether a system-user is within the limits at
// now. The validity is bounded whatever the models are: until at most
// MaxValidity after since and after now (a since in the future would
// otherwise stretch it).
func (l Limits) CheckSystemUser(r SystemUserRequest, now time.Time) error {
	if err := l.CheckModels(r.Models); err != nil {
		return err
	}
	days := func(d time.Duration) string { return fmt.Sprintf("%d days", d/(24*time.Hour)) }
	switch {
	case r.Until.IsZero():
		return refuse(RuleLimitValidity, "until is required: a system user is valid for at most %s", days(l.MaxValidity))
	case r.Until.Sub(r.Since) > l.MaxValidity:
		return refuse(RuleLimitValidity, "until %s is more than %s after since %s: the client's limits allow at most %s",
			r.Until.UTC().Format(time.RFC3339), days(l.MaxValidity), r.Since.UTC().Format(time.RFC3339), days(l.MaxValidity))
	case r.Until.Sub(now) > l.MaxValidity:
		return refuse(RuleLimitValidity, "until %s is more than %s from now: the client's limits allow at most %s",
			r.Until.UTC().Format(time.RFC3339), days(l.MaxValidity), days(l.MaxValidity))
	case r.HasPassword && !l.Password:
		return refuse(RuleLimitPassword, "the client's limits do not allow a password in a system user (SSH keys only)")
	case r.HasSSHKeys && !l.SSHKeys:
		return refuse(RuleLimitSSHKeys, "the client's limits do not allow SSH keys in a system user (a password only)")
	case r.Serials == 0 && l.SerialsRequired:
		return refuse(RuleLimitSerials, "the client's limits require serials: a system user without them is a login on every device of its models")
	}
	return nil
}
