#!/usr/bin/env bash
# The package arrows the README's Layout section draws, checked with
# `go list` (run by `make lint`): cmd -> appliance/httpapi -> appliance ->
# policy, hsm, store, assertion, wire; the leaves import nothing of ours; the
# officers' CLI links the wire types and never the server or the token.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
mod=github.com/keyrack/keyrack
fail=0

refuse() { # what, why
	echo "layers: $1: $2" >&2
	fail=1
}

# check LIST PATTERN WHAT WHY: every line of LIST matching the extended
# regular expression PATTERN is refused. The lists are taken first, so that
# a `go list` that fails stops the check instead of passing it.
check() {
	local p
	while read -r p; do
		if [ -n "$p" ]; then refuse "$3 $p" "$4"; fi
	done <<<"$(grep -E "$2" <<<"$1" || true)"
}

imports() { "$GO" list -f '{{join .Imports "\n"}}' "$1"; }
deps() { "$GO" list -deps -f '{{.ImportPath}}' "$1"; }
nonstd_deps() { "$GO" list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' "$1"; }

# The core decides; it speaks no HTTP and knows no front end.
list=$(imports ./appliance)
check "$list" '^(net/http(/.*)?|github.com/labstack/echo/v4(/.*)?)$' "$mod/appliance imports" \
	"the core must not speak HTTP (that is appliance/httpapi's)"
list=$(deps ./appliance)
check "$list" "^(github.com/labstack/echo/v4(/.*)?|$mod/appliance/httpapi)$" "$mod/appliance links" \
	"the core must not depend on echo or a front end"

# The HTTP layer decodes and encodes; the token and the store are the core's.
list=$(imports ./appliance/httpapi)
check "$list" "^$mod/(hsm|appliance/store)(/.*)?$" "$mod/appliance/httpapi imports" \
	"handlers call the core, never the token or the store"

# The wire types are the standard library's only: the CLI links them.
list=$(nonstd_deps ./appliance/wire | grep -vx "$mod/appliance/wire" || true)
check "$list" '.' "$mod/appliance/wire links" "wire may use the standard library only"

# The leaves import nothing of ours.
for leaf in policy hsm hsm/keywrap appliance/store appliance/assertion appliance/keyfile appliance/officerkey internal/testpki; do
	list=$(deps "./$leaf" | grep -vx "$mod/$leaf")
	check "$list" "^$mod/" "$mod/$leaf links" "a leaf package imports nothing of ours"
done

# The offline verifier of officers' approvals reads the store's types and
# checks signatures: nothing of the core.
list=$(deps ./appliance/auditverify | grep -E "^$mod/" | grep -vxE "$mod/appliance/(auditverify|store|officerkey|wire)" || true)
check "$list" '.' "$mod/appliance/auditverify links" "auditverify links store, officerkey and wire only"

# The officers' CLI: the wire types, never the server, echo or PKCS#11.
list=$(deps ./cmd/keyrack)
check "$list" "^($mod/appliance|$mod/appliance/httpapi|$mod/hsm|github.com/labstack/echo/v4(/.*)?|github.com/miekg/pkcs11)$" \
	"$mod/cmd/keyrack links" "the CLI links the wire types, never the server, echo or the token"

if [ "$fail" -ne 0 ]; then
	exit 1
fi
echo "layers: ok"
