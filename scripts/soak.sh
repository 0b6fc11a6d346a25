#!/usr/bin/env bash
# The long versions of the resilience tests (not part of CI's run):
#   ROUNDS   crash-loop rounds of kill -9        (default 200; CI runs 20)
#   RECORDS  records of the end-to-end test      (default 1000000; CI 200000)
#   REPEAT   runs of every resilience test, stopping at the first failure (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
ZEROBUSD_CRASH_ROUNDS="${ROUNDS:-200}" ZEROBUSD_E2E_RECORDS="${RECORDS:-1000000}" \
  ctest --output-on-failure --timeout 3600 --repeat "until-fail:${REPEAT:-3}" \
  -R 'CrashTest|EndToEndTest|RestartTest|ResilienceTest|CapacityTest|LifecycleTest|CorruptionTest'
