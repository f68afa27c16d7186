#!/usr/bin/env bash
# Installs the Debian packages keyrack's build, dev run and tests need, when
# they are missing: SoftHSM2 (the dev/test token), OpenSC (pkcs11-tool), GnuPG
# (tests make OpenPGP keys the way `snap create-key` does), systemd-analyze
# (the unit's security check), PostgreSQL (the store tests run against a
# throwaway cluster they start themselves), ps (a test reads the daemon's
# threads' scheduling class), OpenSSH's client tools (officer keys: tests
# check interoperation with ssh-keygen and sign through a real ssh-agent), a
# C compiler (cgo) and p11-kit's RPC server and client module (the token in
# its own process: make run TOKEN=remote, the remote-token tests).
set -euo pipefail
need=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || ls /usr/lib/*/softhsm/libsofthsm2.so >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
command -v gpg >/dev/null 2>&1 || need+=(gnupg)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v ps >/dev/null 2>&1 || need+=(procps)
{ command -v ssh-agent && command -v ssh-add && command -v ssh-keygen; } >/dev/null 2>&1 || need+=(openssh-client)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
{ [ -x /usr/libexec/p11-kit/p11-kit-server ] || [ -x /usr/lib/p11-kit/p11-kit-server ]; } || need+=(p11-kit)
compgen -G "/usr/lib/*/pkcs11/p11-kit-client.so" >/dev/null || [ -e /usr/lib/pkcs11/p11-kit-client.so ] || need+=(p11-kit-modules)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
	echo "install-deps: installing ${need[*]}" >&2
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
