#!/usr/bin/env bash
# The main job on a bundled sample: installs, builds, makes a small Megatron checkpoint (TP 2, PP 2, saved
# with real torch.save) and converts it with mpirun on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
ci/build.sh
work=${DEMO_DIR:-build/demo}
rm -rf "$work"
/usr/bin/python3 tests/fixtures/megatron_fixture.py --out "$work" --arch opensci --tp 2 --pp 2 \
  --layers 4 --hidden 64 --heads 4 --kv-heads 4 --ffn 256 --padded-vocab 512 --dtype bf16 --iterations 1000,2000
ranks=${RANKS:-2}
mpi_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -np "$ranks" "${mpi_flags[@]}" build/bin/megatron2hf \
  --input "$work/checkpoint" --output "$work/hf/iter_0002000" --overwrite
echo
echo "Converted folder: $work/hf/iter_0002000"
ls -l "$work/hf/iter_0002000"
