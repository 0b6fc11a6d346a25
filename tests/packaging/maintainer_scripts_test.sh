#!/usr/bin/env bash
# The zerobusd package's maintainer scripts (packaging/debian/zerobusd.*)
# through install, upgrade, an admin's override, a deleted config, remove and
# purge. They run in a private mount namespace whose /etc, /var/lib and /run
# are empty tmpfs (the host's are never touched), with the system tools they
# call (systemd-sysusers, deb-systemd-helper, systemctl, chgrp...) replaced by
# stubs that log their arguments; /run/systemd/system exists, as on a host
# running systemd. Exit 77 (skipped) when mount namespaces are not allowed.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
if [ "${ZB_IN_NAMESPACE:-}" != 1 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    unshare -m --propagation private true 2>/dev/null || { echo "no mount namespaces here: skipped"; exit 77; }
    exec unshare -m --propagation private env ZB_IN_NAMESPACE=1 bash "$0"
  fi
  unshare -r -m --propagation private true 2>/dev/null || { echo "no user+mount namespaces here: skipped"; exit 77; }
  exec unshare -r -m --propagation private env ZB_IN_NAMESPACE=1 bash "$0"
fi

WORK="$(mktemp -d)"
STUBS="$WORK/stubs"
LOG="$WORK/calls.log"
mkdir -p "$STUBS"
for tool in systemd-sysusers systemd-tmpfiles chgrp deb-systemd-helper deb-systemd-invoke systemctl; do
  printf '#!/bin/sh\necho "%s $*" >> "%s"\nexit 0\n' "$tool" "$LOG" > "$STUBS/$tool"
  chmod +x "$STUBS/$tool"
done
# dpkg-statoverride --list PATH: an override exists for the paths named in
# $WORK/overrides.
printf '#!/bin/sh\necho "dpkg-statoverride $*" >> "%s"\ngrep -qx "$2" "%s/overrides" 2>/dev/null\n' "$LOG" "$WORK" \
  > "$STUBS/dpkg-statoverride"
chmod +x "$STUBS/dpkg-statoverride"
# The scripts, before the tmpfs hides $SRC if it lives under /etc, /var/lib or /run.
cp "$SRC"/packaging/debian/zerobusd.postinst "$SRC"/packaging/debian/zerobusd.prerm \
  "$SRC"/packaging/debian/zerobusd.postrm "$WORK/"
for dir in /etc /var/lib /run; do mount -t tmpfs tmpfs "$dir"; done
mkdir -p /run/systemd/system /etc/zerobusd/schemas
export PATH="$STUBS:/usr/sbin:/usr/bin:/sbin:/bin"

fails=0
check() {  # check WHAT COMMAND...: runs a test command, reports
  local what="$1"
  shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}
called() { grep -qxF "$1" "$LOG"; }
not_called() { ! grep -qF "$1" "$LOG"; }
mode() { [ "$(stat -c %a "$1")" = "$2" ]; }
run() { : > "$LOG"; sh -e "$WORK/zerobusd.$1" "${@:2}"; }

# A fresh install: dpkg has unpacked the config (0644 as packed).
echo "routes: []" > /etc/zerobusd/zerobusd.yaml
chmod 0644 /etc/zerobusd/zerobusd.yaml
chmod 0755 /etc/zerobusd
check "install: postinst configure exits 0" run postinst configure
check "install: users and groups from sysusers" called "systemd-sysusers zerobusd.conf"
check "install: the state directory from tmpfiles" called "systemd-tmpfiles --create zerobusd.conf"
check "install: the config's group" called "chgrp zerobusd /etc/zerobusd/zerobusd.yaml"
check "install: the config 0640" mode /etc/zerobusd/zerobusd.yaml 640
check "install: its folder 0750" mode /etc/zerobusd 750
check "install: the unit enabled" called "deb-systemd-helper enable zerobusd.service"
check "install: systemd reloaded" called "systemctl --system daemon-reload"
check "install: the unit started" called "deb-systemd-invoke start zerobusd.service"

check "upgrade: postinst configure OLD exits 0" run postinst configure 0.0.9
check "upgrade: the unit restarted, not started" called "deb-systemd-invoke restart zerobusd.service"

# The admin overrides the config's owner and mode: left as they are.
echo "/etc/zerobusd/zerobusd.yaml" > "$WORK/overrides"
chmod 0600 /etc/zerobusd/zerobusd.yaml
check "override: postinst exits 0" run postinst configure 0.1.0
check "override: the config not touched" not_called "chgrp zerobusd /etc/zerobusd/zerobusd.yaml"
check "override: its mode kept" mode /etc/zerobusd/zerobusd.yaml 600
rm -f "$WORK/overrides"

# The admin deleted the config: it stays deleted, and configure succeeds.
rm /etc/zerobusd/zerobusd.yaml
check "deleted config: postinst exits 0" run postinst configure 0.1.0
check "deleted config: not recreated" test ! -e /etc/zerobusd/zerobusd.yaml

# Remove keeps the spool; purge deletes it and the secret.
mkdir -p /var/lib/zerobusd/spool && echo data > /var/lib/zerobusd/spool/000001.log
mkdir -p /etc/credstore && echo secret > /etc/credstore/zerobusd.client_secret
check "remove: prerm remove exits 0" run prerm remove
check "remove: the unit stopped" called "deb-systemd-invoke stop zerobusd.service"
check "remove: postrm remove exits 0" run postrm remove
check "remove: the unit masked" called "deb-systemd-helper mask zerobusd.service"
check "remove: the spool kept" test -e /var/lib/zerobusd/spool/000001.log
check "upgrade: prerm upgrade does not stop" run prerm upgrade 0.1.0
check "upgrade: no stop" not_called "deb-systemd-invoke stop"
check "purge: postrm purge exits 0" run postrm purge
check "purge: the unit's state purged" called "deb-systemd-helper purge zerobusd.service"
check "purge: the spool deleted" test ! -e /var/lib/zerobusd
check "purge: the secret deleted" test ! -e /etc/credstore/zerobusd.client_secret

rm -rf "$WORK"
if [ "$fails" -gt 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "every maintainer-script check passed"
