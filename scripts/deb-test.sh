#!/usr/bin/env bash
# Builds the Debian package with cargo-deb, installs it with dpkg, checks
# what it installed (binary, conffile, hardened unit, monitoring kit) and
# that the installed config passes check-config, then purges it.
# Needs root (dpkg); scripts/test.sh runs it. Installs cargo-deb if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked -q
deb=$(cargo deb --strip 2>/dev/null | tail -1)
[ -f "$deb" ] || { echo "cargo deb produced no package"; exit 1; }
echo "built $deb ($(du -h "$deb" | cut -f1))"

# A leftover from an earlier run must not hide a broken install.
dpkg --purge envelope-router >/dev/null 2>&1 || true
trap 'dpkg --purge envelope-router >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb" >/dev/null

fail() { echo "deb check failed: $*"; exit 1; }
[ -x /usr/bin/envelope-router ] || fail "no /usr/bin/envelope-router"
[ -f /etc/envelope-router/router.yaml ] || fail "no /etc/envelope-router/router.yaml"
grep -qx /etc/envelope-router/router.yaml /var/lib/dpkg/info/envelope-router.conffiles \
  || fail "router.yaml is not a conffile"
unit=/usr/lib/systemd/system/envelope-router.service
[ -f "$unit" ] || fail "no $unit"
for line in DynamicUser=yes ProtectSystem=strict Restart=on-failure KillSignal=SIGTERM \
    'ExecReload=/bin/kill -HUP $MAINPID'; do
  grep -qxF "$line" "$unit" || fail "$unit lacks $line"
done
# The stop timeout leaves room above the shipped config's shutdown_timeout.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$unit")
grace=$(sed -n 's/^shutdown_timeout: *\([0-9]*\)s.*/\1/p' /etc/envelope-router/router.yaml)
[ -n "$stop" ] && [ -n "$grace" ] && [ "$stop" -gt "$grace" ] \
  || fail "TimeoutStopSec ($stop s) must exceed shutdown_timeout ($grace s)"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
fi
[ -f /usr/share/envelope-router/prometheus/alerts.yaml ] || fail "no alert rules"
[ -f /usr/share/envelope-router/grafana/envelope-router.json ] || fail "no dashboard"
/usr/bin/envelope-router --version
/usr/bin/envelope-router check-config --config /etc/envelope-router/router.yaml >/dev/null \
  || fail "check-config refuses the installed config"
echo "installed config: check-config OK"

dpkg --purge envelope-router >/dev/null
[ ! -e /usr/bin/envelope-router ] || fail "binary left after purge"
[ ! -e /etc/envelope-router/router.yaml ] || fail "conffile left after purge"
trap - EXIT
echo "deb: built, installed, checked, purged"
