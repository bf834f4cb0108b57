#!/usr/bin/env bash
# Benchmark (not part of the test run): builds megatron2hf in Release into build-bench/, generates synthetic
# checkpoints under build/bench/ and prints one table (engine vs the cat/cp floor vs the Python baseline).
#
#   ci/bench.sh                                  # 0.5 and 2 GB, torch and torch_dist, 1/2/4 ranks, source and bf16
#   ci/bench.sh --sizes 0.5,2,8                  # add 8 GB (needs ~60 GB free disk; long on a slow disk)
#   ci/bench.sh --input /path/to/checkpoints     # a real checkpoint instead of generated ones
#   ci/bench.sh --help                           # every option (bench/bench.py)
#   ci/bench.sh --cross-host [ARGS]              # the 2 GB model across the 3 hosts of ci/cluster-up.sh with shaped
#                                                # links, against the cost model (bench/cross_host.py, docs/scaling.md)
#   ci/bench.sh --whole-run [ARGS]               # 40 iterations of a 0.5 GB model in one engine run and through the
#                                                # launcher, against the floor (bench/whole_run.py; ~22 GB free disk)
#
# Results: the table on stdout, build/bench/results.md (machine description + table + targets) and
# build/bench/results.json. docs/performance.md holds the reference run.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
build=${BENCH_BUILD_DIR:-build-bench}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target megatron2hf megatron2hf-launch >/dev/null
if [ "${1:-}" = --whole-run ]; then
  shift
  exec /usr/bin/python3 bench/whole_run.py --engine "$build/bin/megatron2hf" --launcher "$build/bin/megatron2hf-launch" "$@"
fi
if [ "${1:-}" = --cross-host ]; then
  shift
  export M2H_CLUSTER_DIR=${M2H_CLUSTER_DIR:-/tmp/m2h-cluster-bench}
  ci/cluster-up.sh
  trap ci/cluster-down.sh EXIT
  /usr/bin/python3 bench/cross_host.py --engine "$build/bin/megatron2hf" --cluster-dir "$M2H_CLUSTER_DIR" "$@"
  exit
fi
exec /usr/bin/python3 bench/bench.py --engine "$build/bin/megatron2hf" "$@"
