#!/usr/bin/env bash
# Builds the Debian packages from a build tree:
#   zerobusd_<version>_<arch>.deb           the daemon, zerobusctl, the unit,
#       sysusers and tmpfiles snippets, the config (a conffile), schemas, man
#       pages, Prometheus rules, a Grafana dashboard, the Python producer
#       library; maintainer scripts in the Debian way.
#   zerobus-devserver_<version>_<arch>.deb  the local test server.
# Reads the build from $BUILD_DIR (default build/) and writes the packages to
# $OUT_DIR (default: the build directory); prints their paths.
# Binaries are stripped (debug symbols dropped). `lintian` on the results:
# no errors; the warnings that remain are explained in
# packaging/debian/lintian-overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
OUT_DIR="${OUT_DIR:-$BUILD_DIR}"
VERSION="$(sed -n 's/^project(zerobusd VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)"
ARCH="$(dpkg --print-architecture)"
MAINTAINER="zerobusd maintainers <maintainers@zerobusd.org>"
for exe in zerobusd zerobusctl zerobus-devserver; do
  if [ ! -x "$BUILD_DIR/bin/$exe" ]; then
    echo "build-deb: $BUILD_DIR/bin/$exe is missing: build first (scripts/build.sh)" >&2
    exit 1
  fi
done
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# install_bin SRC DEST: stripped, without the sections lintian calls unneeded.
install_bin() {
  install -D -m 0755 "$1" "$2"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$2"
}
# install_man PAGE STAGE: gzip -9n into /usr/share/man/manN.
install_man() {
  local section="${1##*.}"
  install -d -m 0755 "$2/usr/share/man/man$section"
  gzip -9n < "$1" > "$2/usr/share/man/man$section/$(basename "$1").gz"
  chmod 0644 "$2/usr/share/man/man$section/$(basename "$1").gz"
}
# docs PACKAGE STAGE: copyright and changelog.
docs() {
  install -D -m 0644 packaging/debian/copyright "$2/usr/share/doc/$1/copyright"
  sed "s/^zerobusd (/$1 (/" packaging/debian/changelog | gzip -9n > "$2/usr/share/doc/$1/changelog.gz"
  chmod 0644 "$2/usr/share/doc/$1/changelog.gz"
}
# depends STAGE: the Debian package of every shared library its binaries load.
depends() {
  for exe in "$1"/usr/bin/*; do ldd "$exe"; done \
    | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p' | sort -u \
    | while read -r lib; do dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true; done \
    | cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g'
}
# build PACKAGE STAGE: control already written; fixes modes, builds.
build() {
  chmod 0755 "$2"
  find "$2" -type d -exec chmod 0755 {} +
  chmod 0750 "$2/etc/zerobusd" 2>/dev/null || true
  local size
  size="$(du -sk --exclude=DEBIAN "$2" | cut -f1)"
  sed -i "s/^Installed-Size: .*/Installed-Size: $size/" "$2/DEBIAN/control"
  local out="$OUT_DIR/${1}_${VERSION}_${ARCH}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$2" "$out" >/dev/null
  echo "$out"
}

# ------------------------------------------------------------------ zerobusd
S="$WORK/zerobusd"
install_bin "$BUILD_DIR/bin/zerobusd" "$S/usr/bin/zerobusd"
install_bin "$BUILD_DIR/bin/zerobusctl" "$S/usr/bin/zerobusctl"
install -D -m 0644 systemd/zerobusd.service "$S/lib/systemd/system/zerobusd.service"
install -D -m 0644 systemd/zerobusd.sysusers "$S/usr/lib/sysusers.d/zerobusd.conf"
install -D -m 0644 systemd/zerobusd.tmpfiles "$S/usr/lib/tmpfiles.d/zerobusd.conf"
# The installed config lets the package's producers' group write.
install -d "$S/etc/zerobusd"
sed 's/^  # socket_group: zerobusd-producers$/  socket_group: zerobusd-producers/' config/zerobusd.example.yaml \
  > "$S/etc/zerobusd/zerobusd.yaml"
chmod 0640 "$S/etc/zerobusd/zerobusd.yaml"
grep -q '^  socket_group: zerobusd-producers$' "$S/etc/zerobusd/zerobusd.yaml"
install -D -m 0644 config/schemas/reading.proto "$S/etc/zerobusd/schemas/reading.proto"
for page in packaging/man/zerobusd.8 packaging/man/zerobusctl.1 packaging/man/zerobusd.yaml.5; do
  install_man "$page" "$S"
done
docs zerobusd "$S"
install -D -m 0644 README.md "$S/usr/share/doc/zerobusd/README.md"
for doc in docs/*.md; do install -D -m 0644 "$doc" "$S/usr/share/doc/zerobusd/$(basename "$doc")"; done
# Prometheus alerting rules (with their promtool tests) and a Grafana dashboard.
install -D -m 0644 packaging/prometheus/zerobusd-alerts.yml "$S/usr/share/zerobusd/prometheus/zerobusd-alerts.yml"
install -D -m 0644 packaging/prometheus/zerobusd-alerts.test.yml \
  "$S/usr/share/zerobusd/prometheus/zerobusd-alerts.test.yml"
install -D -m 0644 packaging/grafana/zerobusd-dashboard.json "$S/usr/share/zerobusd/grafana/zerobusd-dashboard.json"
# The Python producer library: `import zerobusd` with Debian's python3.
install -D -m 0644 python/zerobusd.py "$S/usr/lib/python3/dist-packages/zerobusd.py"
install -D -m 0644 packaging/debian/lintian-overrides "$S/usr/share/lintian/overrides/zerobusd"
mkdir -p "$S/DEBIAN"
cat > "$S/DEBIAN/control" <<CONTROL
Package: zerobusd
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: 0
Depends: $(depends "$S"), init-system-helpers (>= 1.54~), adduser, procps
Suggests: python3, prometheus
Section: net
Priority: optional
Homepage: https://github.com/zerobusd/zerobusd
Description: durable local ingestion daemon for Databricks Zerobus
 Producers on the host write records over a Unix socket, as JSON lines or
 protobuf frames. zerobusd makes each record durable in a RocksDB spool,
 acknowledges it, and drains the spool into Databricks Zerobus Ingest
 streams, deleting a record only after the service's durability
 acknowledgement covers it. Includes zerobusctl, Prometheus alerting rules,
 a Grafana dashboard and a Python producer library.
CONTROL
printf '%s\n' /etc/zerobusd/zerobusd.yaml /etc/zerobusd/schemas/reading.proto > "$S/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/zerobusd.$script" "$S/DEBIAN/$script"
done
build zerobusd "$S"

# --------------------------------------------------------- zerobus-devserver
D="$WORK/zerobus-devserver"
install_bin "$BUILD_DIR/bin/zerobus-devserver" "$D/usr/bin/zerobus-devserver"
install_man packaging/man/zerobus-devserver.1 "$D"
docs zerobus-devserver "$D"
install -D -m 0644 docs/devserver.md "$D/usr/share/doc/zerobus-devserver/devserver.md"
mkdir -p "$D/DEBIAN"
cat > "$D/DEBIAN/control" <<CONTROL
Package: zerobus-devserver
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: 0
Depends: $(depends "$D")
Section: devel
Priority: optional
Homepage: https://github.com/zerobusd/zerobusd
Description: local Zerobus Ingest server for testing zerobusd
 Speaks the Zerobus v1 protocol (gRPC EphemeralStream, its OAuth token
 endpoint and the Unity Catalog table endpoint) on loopback, stores the rows
 it acknowledges, and models the service's limits and faults on request.
 For tests and demos only: it has no real authentication.
CONTROL
build zerobus-devserver "$D"
