#!/usr/bin/env bash
# Builds the interop environments under build/interop/ (never committed), pinned exactly by
# tests/interop/requirements/*.txt:
#   build/interop/base           Python 3.12: torch (PyPI's wheel, which runs on the CPU), transformers, safetensors
#   build/interop/mcore-VERSION  one per tests/interop/requirements/mcore-VERSION.txt: megatron-core VERSION and its
#                                own numpy, layered over base (a .pth file), so torch is installed once
# Prints nothing when everything is already in place (a stamp per environment records the pins it was built from).
# Usage: ci/interop-env.sh [--list]   (--list prints the megatron-core versions, one a line)
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=tests/interop/requirements
ROOT=${M2H_INTEROP_DIR:-build/interop}

versions() { ls "$REQ" | sed -n 's/^mcore-\(.*\)\.txt$/\1/p' | sort -V; }
if [ "${1:-}" = --list ]; then versions; exit 0; fi

# megatron-core 0.17 and later need Python 3.12; Debian 12 has 3.11, the machine image has pyenv's 3.12.
find_python() {
  local c
  for c in "${M2H_PYTHON312:-}" python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  echo "ci/interop-env.sh: no Python 3.12 with venv and ensurepip found (tried python3.12, pyenv, /usr/local/bin);" \
       "set M2H_PYTHON312=/path/to/python3.12" >&2
  return 1
}

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

make_venv() {  # DIR STAMP: a fresh venv at DIR unless its stamp says it is current
  local dir=$1 stamp=$2
  [ -f "$dir/.m2h-stamp" ] && [ "$(cat "$dir/.m2h-stamp")" = "$stamp" ] && return 1
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  return 0
}

pip_install() {  # DIR REQUIREMENTS: exactly the pinned packages, nothing resolved on the fly
  "$1/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: -r "$2"
}

PY=$(find_python)
mkdir -p "$ROOT"
base_stamp=$(stamp_of "$REQ/base.txt")
if make_venv "$ROOT/base" "$base_stamp"; then
  echo "ci/interop-env.sh: building $ROOT/base (torch, transformers, safetensors; about 3.5 GB)"
  pip_install "$ROOT/base" "$REQ/base.txt"
  "$ROOT/base/bin/python" -W ignore -c 'import torch, transformers, safetensors' ||
    { echo "ci/interop-env.sh: torch, transformers or safetensors does not import in $ROOT/base" >&2; exit 1; }
  echo "$base_stamp" >"$ROOT/base/.m2h-stamp"
fi
base_site=$("$ROOT/base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

for v in $(versions); do
  dir="$ROOT/mcore-$v"
  if make_venv "$dir" "$(stamp_of "$REQ/base.txt" "$REQ/mcore-$v.txt")"; then
    echo "ci/interop-env.sh: building $dir"
    site=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # After the venv's own site-packages: its numpy and megatron-core win, torch comes from base.
    echo "$(cd "$base_site" && pwd)" >"$site/m2h-interop-base.pth"
    pip_install "$dir" "$REQ/mcore-$v.txt"
    # As the writer imports it: behind tests/interop/cuda_on_cpu.py (megatron-core 0.15 fails a bare import on a
    # machine with a CUDA toolkit and no GPU).
    if ! "$dir/bin/python" -W ignore -c 'import sys; sys.path.insert(0, "tests/interop"); import cuda_on_cpu
cuda_on_cpu.patch(); import megatron.core' >"$dir/import.log" 2>&1; then
      echo "ci/interop-env.sh: megatron-core $v does not import in $dir:" >&2
      tail -5 "$dir/import.log" >&2
      exit 1
    fi
    stamp_of "$REQ/base.txt" "$REQ/mcore-$v.txt" >"$dir/.m2h-stamp"
  fi
done
