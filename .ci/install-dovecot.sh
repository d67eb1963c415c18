#!/usr/bin/env bash
# Installs Dovecot (POP3) from Debian's packages when missing. Idempotent. The tests start
# their own unprivileged instance from a private config; the distro service must not run.
set -euo pipefail
if [ -x /usr/sbin/dovecot ] && dpkg -s dovecot-pop3d >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends dovecot-core dovecot-pop3d
# Nothing may stay listening on 110/995 if the package started the system service.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop dovecot 2>/dev/null || true; fi
$SUDO pkill -x dovecot 2>/dev/null || true
