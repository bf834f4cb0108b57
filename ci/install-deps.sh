#!/usr/bin/env bash
# Installs the Debian packages megatron2hf builds and tests with. Idempotent, and quiet when all is there.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev
  libcxxopts-dev libzstd-dev libspdlog-dev nlohmann-json3-dev libgtest-dev
  python3-torch python3-numpy python3-zstandard python3-h5py hdf5-tools
  strace
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "ci/install-deps.sh: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
