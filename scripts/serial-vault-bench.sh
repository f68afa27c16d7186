#!/usr/bin/env bash
# Runs keyrack-bench's -target mode against Canonical's Serial Vault, for a
# side-by-side figure taken with the same load generator and the same
# simulated devices as keyrack's own end-to-end phase.
#
#   scripts/serial-vault-bench.sh SV_BIN_DIR [keyrack-bench flags...]
#
# SV_BIN_DIR holds the serial-vault and serial-vault-admin binaries, built by
# the user from Serial Vault's own source (nothing of it is in this
# repository). The script starts a throwaway PostgreSQL cluster (Unix socket
# only), writes a settings.yaml with the database keystore, creates the
# tables with serial-vault-admin, imports a fresh RSA-4096 signing key and a
# model through Serial Vault's admin API, starts its signing service and
# runs ./bin/keyrack-bench -target (BENCH overrides the path) with any
# further flags. Everything is stopped and removed at the end.
#
# Serial Vault listens on every interface of its port, so when the script
# can (as root) it runs everything in a network namespace of its own with
# only a loopback interface. BENCH_LOCK, if set, is a file the benchmark
# itself is run under flock(1) on, so that benchmarks on a shared machine
# do not overlap.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -x "$1/serial-vault" ] || [ ! -x "$1/serial-vault-admin" ]; then
	echo "usage: $0 SV_BIN_DIR [keyrack-bench flags...] (SV_BIN_DIR with serial-vault and serial-vault-admin)" >&2
	exit 2
fi
svbin=$(cd "$1" && pwd)
shift
cd "$(dirname "$0")/.."
BENCH=${BENCH:-./bin/keyrack-bench}
[ -x "$BENCH" ] || { echo "no $BENCH: go build -o bin/keyrack-bench ./cmd/keyrack-bench" >&2; exit 2; }

if [ "$(id -u)" = 0 ] && [ -z "${SVB_IN_NETNS:-}" ] && command -v unshare >/dev/null; then
	SVB_IN_NETNS=1 exec unshare --net -- "$0" "$svbin" "$@"
fi
if [ -n "${SVB_IN_NETNS:-}" ]; then
	ip link set lo up
fi

pgbin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
work=$(mktemp -d /tmp/sv-bench-XXXXXX)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -d "$work/pg" ]; then as_pg "$pgbin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

# PostgreSQL refuses to run as root: its tools then run as postgres.
as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; fi
chmod 0755 "$work"

port() { # a free loopback port
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
pgport=$(port)
as_pg "$pgbin/initdb" -D "$work/pg" -U sv --auth=trust -E UTF8 >"$work/initdb.log"
as_pg "$pgbin/pg_ctl" -D "$work/pg" -o "-k $work -c listen_addresses='' -p $pgport" -l "$work/pg.log" -w start >/dev/null
as_pg "$pgbin/createdb" -h "$work" -p "$pgport" -U sv serialvault

brand=${SV_BRAND:-keyrackbench}
model=${SV_MODEL:-bench-device}
apikey=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
sign_port=$(port)
admin_port=$(port)
cat >"$work/settings.yaml" <<EOF
mode: signing
portAdmin: "$admin_port"
portSigning: "$sign_port"
docRoot: "$work"
driver: postgres
datasource: "host=$work port=$pgport user=sv dbname=serialvault sslmode=disable"
keystore: database
keystoreSecret: "$(head -c 24 /dev/urandom | base64)"
csrfAuthKey: "$(head -c 32 /dev/urandom | base64)"
urlHost: "127.0.0.1:$admin_port"
urlScheme: http
enableUserAuth: false
EOF
"$svbin/serial-vault-admin" database --config="$work/settings.yaml" >"$work/migrate.log" 2>&1

# start MODE PORT: a Serial Vault service, waited for on /v1/version.
start() {
	CSRF_SECURE=disable "$svbin/serial-vault" --mode="$1" --config="$work/settings.yaml" >"$work/$1.log" 2>&1 &
	pids+=($!)
	local i
	for i in $(seq 100); do
		if curl -fsS "http://127.0.0.1:$2/v1/version" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "serial-vault $1 did not start:" >&2
	tail "$work/$1.log" >&2
	exit 1
}

# The signing key: a fresh RSA-4096 OpenPGP key without a passphrase, the
# form Serial Vault's admin API imports (it seals it in its database).
export GNUPGHOME="$work/gnupg"
mkdir -m 0700 "$GNUPGHOME"
gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-generate-key "$brand serial key" rsa4096 sign never 2>/dev/null
privkey=$(gpg --batch --armor --export-secret-keys | base64 -w0)

start admin "$admin_port"
admin="http://127.0.0.1:$admin_port/v1"
jar="$work/cookies"
# The admin API wants gorilla/csrf's token back in a header, with its cookie.
csrf=$(curl -fsS -c "$jar" -D - -o /dev/null "$admin/token" | tr -d '\r' | sed -n 's/^[Xx]-[Cc][Ss][Rr][Ff]-[Tt]oken: //p')
post() { # PATH JSON
	curl -fsS -b "$jar" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' -d "$2" "$admin/$1"
}
post keypairs "{\"authority-id\":\"$brand\",\"key-name\":\"bench\",\"private-key\":\"$privkey\"}" >"$work/keypair.json"
keyid=$(curl -fsS -b "$jar" "$admin/keypairs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keypairs"][0]["ID"])')
post models "{\"brand-id\":\"$brand\",\"model\":\"$model\",\"keypair-id\":$keyid,\"keypair-id-user\":$keyid,\"api-key\":\"$apikey\"}" >"$work/model.json"
kill "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true
unset 'pids[-1]'

start signing "$sign_port"
echo "serial-vault: brand $brand, model $model, signing on 127.0.0.1:$sign_port, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}')"
lock=()
if [ -n "${BENCH_LOCK:-}" ]; then lock=(flock "$BENCH_LOCK"); fi
status=0
"${lock[@]}" "$BENCH" -target "http://127.0.0.1:$sign_port/v1/" -target-api-key "$apikey" \
	-target-brand "$brand" -target-model "$model" -target-serial "$model-" -target-pid "${pids[-1]}" "$@" || status=$?
if [ -n "${SV_KEEP_LOG:-}" ]; then cp "$work/signing.log" "$SV_KEEP_LOG"; fi
exit $status
