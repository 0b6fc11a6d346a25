#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest closes the run).
# Long-run knobs: ZEROBUSD_E2E_RECORDS (default 200000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j"$(nproc)"
