#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and running the demo need.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev libprotoc-dev protobuf-compiler
  librocksdb-dev libboost-dev libyaml-cpp-dev prometheus-cpp-dev
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libsystemd-dev
  libcurl4-openssl-dev rapidjson-dev libsimdjson-dev libbenchmark-dev
  python3 curl socat procps openssl
  # The SDK interoperability test runs the official SDK's Node addon
  # (fetched by scripts/setup-sdk.sh).
  nodejs
  # The sanitizer build and the fuzz targets (scripts/test.sh, scripts/fuzz.sh):
  # clang, its sanitizer + libFuzzer runtimes, llvm-symbolizer for stacks.
  clang-14 libclang-rt-14-dev llvm-14
  # systemd-analyze rates the unit's hardening (the UnitExposure test).
  systemd
  # A real Prometheus scrapes the daemon in a test; promtool checks the
  # exposition and the shipped alert rules.
  prometheus
  # The packaging test: lintian on the .deb files, file(1) to see they are
  # stripped, man(1) to render the man pages.
  lintian file man-db
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-deps: missing packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi
