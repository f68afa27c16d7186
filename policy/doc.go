// Package policy decides what may be signed: the role scopes bound to each
// signing key and the scopes of factory API clients. It does no I/O and
// depends on the standard library only, so every signing path can afford to
// consult it and it can be reviewed on its own.
//
// # Key roles
//
// A key's roles are the local form of snapd's account-key "constraints"
// (account-key format 1): a list of entries, each naming one assertion type
// and, optionally, model-name regular expressions for the header that names
// the model(s) of that type ("model" for serial, model and preseed; the
// "models" list for system-user). An assertion may be signed when any entry
// matches it. The appliance checks this before every signature, so a key
// scoped to serials of one model family signs nothing else, whatever a
// client asks for, and [KeyScope.Constraints] is what the Brand Store is
// asked to register so that devices enforce the same scope.
//
// # Why our own matcher
//
// snapd's matcher is unexported and lives behind a decoded AccountKey
// assertion: using it would mean assembling an account-key for every check
// and would give no reason for a refusal (snapd says only "headers do not
// match"). It would also pull snapd into the signing path. So the package
// carries its own matcher, a small re-implementation of the parts of snapd's
// attribute matching that our constraints can reach: anchored regexps on a
// string, every element of a list matched (recursively), nothing else.
// Keeping it identical is the job of the differential tests: they register
// Constraints() in real account-key assertions signed and decoded by snapd
// and compare [KeyScope.Check] with AccountKey.ConstraintsPrecheck over a
// matrix of types, model names and header shapes, and a fuzz target does the
// same for arbitrary patterns. Where Check is deliberately stricter than
// snapd (header shapes no valid assertion has, see [KeyScope.Check]) the
// tests name the cases and prove snapd's behaviour there as well.
//
// # Client scopes
//
// A factory API client is scoped to one brand, a set of exact model names
// and a set of assertion types ([ClientScope]). Client scopes and key roles
// are independent: a request must pass both.
package policy
