#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit and end-to-end under mpirun) with ctest; then the
# unit tests and a subset of the end-to-end tests again under ASan + UBSan (ci/test-sanitize.sh, build-asan/;
# M2H_SKIP_SANITIZE=1 skips that part).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
ci/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" "$@"
[ "${M2H_SKIP_SANITIZE:-0}" = 1 ] || ci/test-sanitize.sh
