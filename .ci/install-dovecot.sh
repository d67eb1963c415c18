#!/usr/bin/env bash
# Installs Dovecot (POP3; IMAP and LMTP as the retriever's destinations) from Debian packages
# when missing. Idempotent: with the packages present it changes nothing (a Dovecot you run
# yourself is left alone). The tests start private, unprivileged instances from generated
# configs on high loopback ports, so the distro service this installs must not keep running:
# nothing may be left listening on 110/995.
set -euo pipefail

PACKAGES=(dovecot-core dovecot-pop3d dovecot-imapd dovecot-lmtpd)

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for package in "${PACKAGES[@]}"; do
    is_installed "$package" || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

apt_install() {
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
}
# Refresh the package lists only when installing from them fails (a fresh image has none, old
# lists point at removed versions): `apt-get update` is the slow part.
apt_install || { $SUDO apt-get update -q && apt_install; }

# Where no policy-rc.d forbids it, the package starts the system service (or its socket units):
# stop it and keep it from starting at boot. Only that instance: the tests' own Dovecots run
# from other base directories and are not touched.
if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now dovecot.socket dovecot.service >/dev/null 2>&1 || true
fi
if [ -s /run/dovecot/master.pid ]; then
    $SUDO doveadm -c /etc/dovecot/dovecot.conf stop || true
fi

# Bounded wait for the listeners to go, then insist (without iproute2's ss there is no check).
command -v ss >/dev/null || exit 0
for _ in $(seq 50); do
    listeners=$(ss -Hltn '( sport = :110 or sport = :995 )')
    [ -z "$listeners" ] && exit 0
    sleep 0.2
done
echo "install-dovecot.sh: something still listens on port 110/995 after stopping Dovecot:" >&2
echo "$listeners" >&2
exit 1
