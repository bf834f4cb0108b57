#!/usr/bin/env bash
# Installs dependencies, builds the interop environments (ci/interop-env.sh: pinned torch, transformers and
# megatron-core versions from PyPI under build/interop), builds, and runs every test (unit, end-to-end under
# mpirun, the interop matrix against real megatron-core, the golden checkpoints) with ctest; then the
# unit tests and a subset of the end-to-end tests again under ASan + UBSan (ci/test-sanitize.sh, build-asan/;
# M2H_SKIP_SANITIZE=1 skips that part).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
ci/interop-env.sh
ci/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" "$@"
[ "${M2H_SKIP_SANITIZE:-0}" = 1 ] || ci/test-sanitize.sh
