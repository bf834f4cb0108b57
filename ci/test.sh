#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit and end-to-end under mpirun) with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
ci/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" "$@"
