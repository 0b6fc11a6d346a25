#!/usr/bin/env bash
# Builds a Debian package (zerobusd_<version>_<arch>.deb) from ./build:
# binaries in /usr/bin, the unit and sysusers file, the example config.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
VERSION="$(sed -n 's/^project(zerobusd VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)"
ARCH="$(dpkg --print-architecture)"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
install -D -m 0755 "$BUILD_DIR/bin/zerobusd" "$STAGE/usr/bin/zerobusd"
install -D -m 0755 "$BUILD_DIR/bin/zerobusctl" "$STAGE/usr/bin/zerobusctl"
install -D -m 0755 "$BUILD_DIR/bin/zerobus-devserver" "$STAGE/usr/bin/zerobus-devserver"
install -D -m 0644 systemd/zerobusd.service "$STAGE/lib/systemd/system/zerobusd.service"
install -D -m 0644 systemd/zerobusd.sysusers "$STAGE/usr/lib/sysusers.d/zerobusd.conf"
# The installed config lets the package's producers' group write.
install -d -m 0750 "$STAGE/etc/zerobusd"
sed 's/^  # socket_group: zerobusd-producers$/  socket_group: zerobusd-producers/' config/zerobusd.example.yaml \
  > "$STAGE/etc/zerobusd/zerobusd.yaml"
chmod 0640 "$STAGE/etc/zerobusd/zerobusd.yaml"
grep -q '^  socket_group: zerobusd-producers$' "$STAGE/etc/zerobusd/zerobusd.yaml"
install -D -m 0644 config/schemas/reading.proto "$STAGE/etc/zerobusd/schemas/reading.proto"
install -D -m 0644 README.md "$STAGE/usr/share/doc/zerobusd/README.md"
# Prometheus alerting rules (with their promtool tests) and a Grafana dashboard.
install -D -m 0644 packaging/prometheus/zerobusd-alerts.yml "$STAGE/usr/share/zerobusd/prometheus/zerobusd-alerts.yml"
install -D -m 0644 packaging/prometheus/zerobusd-alerts.test.yml \
  "$STAGE/usr/share/zerobusd/prometheus/zerobusd-alerts.test.yml"
install -D -m 0644 packaging/grafana/zerobusd-dashboard.json "$STAGE/usr/share/zerobusd/grafana/zerobusd-dashboard.json"
# The Python producer library: `import zerobusd` with Debian's python3.
install -D -m 0644 python/zerobusd.py "$STAGE/usr/lib/python3/dist-packages/zerobusd.py"
mkdir -p "$STAGE/DEBIAN"
# Depends: the Debian package of every shared library the binaries load.
DEPENDS="$(for exe in "$STAGE"/usr/bin/*; do ldd "$exe"; done \
  | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p' | sort -u \
  | while read -r lib; do dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true; done \
  | cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g')"
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: zerobusd
Version: $VERSION
Architecture: $ARCH
Maintainer: zerobusd maintainers
Depends: $DEPENDS
Section: net
Priority: optional
Description: durable local ingestion daemon for Databricks Zerobus
 Producers write records over a Unix socket; zerobusd spools them in RocksDB
 and drains them into Zerobus Ingest streams, deleting only after durable ACK.
CONTROL
printf '%s\n' /etc/zerobusd/zerobusd.yaml /etc/zerobusd/schemas/reading.proto > "$STAGE/DEBIAN/conffiles"
cat > "$STAGE/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  systemd-sysusers zerobusd.conf >/dev/null 2>&1 || true
  # Config: root writes, the daemon's user reads, nobody else (producers
  # are in zerobusd-producers, never in zerobusd).
  chgrp zerobusd /etc/zerobusd /etc/zerobusd/zerobusd.yaml 2>/dev/null || true
  chmod 0750 /etc/zerobusd 2>/dev/null || true
  chmod 0640 /etc/zerobusd/zerobusd.yaml 2>/dev/null || true
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
POSTINST
chmod 0755 "$STAGE/DEBIAN/postinst"
OUT="$BUILD_DIR/zerobusd_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group --build "$STAGE" "$OUT" >/dev/null
echo "$OUT"
