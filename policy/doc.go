// Package policy decides what may be signed: the role scopes bound to each
// signing key and the scopes of factory API clients. It does no I/O.
//
// A key's roles are the local form of snapd's account-key "constraints"
// (account-key format 1): a list of entries, each naming one assertion type
// and, optionally, model-name regular expressions. An assertion may be
// signed when any entry matches it. The appliance checks this before every
// signature, so a key scoped to serials for one model family signs nothing
// else, whatever a client asks for.
//
// The matcher is our own rather than snapd's because snapd's lives behind an
// AccountKey assertion and matches only headers it has already parsed; ours
// works on the headers before signing and explains its refusals. The
// differential test in this package keeps the two in agreement: for every
// scope and header set in its matrix, Check accepts exactly what snapd's
// AccountKey.ConstraintsPrecheck accepts for the Constraints() we publish,
// except where we are deliberately stricter (documented on Check).
package policy
