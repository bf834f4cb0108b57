#!/usr/bin/env bash
# Stops the private cluster that ci/slurm-up.sh started from $M2H_SLURM_DIR: only processes whose pid file is
# in that directory and whose command line names its config or socket. Other SLURM or munge daemons on this
# machine are left alone. Safe to call when nothing is running.
set -uo pipefail

dir=${M2H_SLURM_DIR:-/tmp/m2h-slurm}
conf=$dir/slurm.conf
export SLURM_CONF=$conf

stop() { # stop PIDFILE PATTERN
  local pid i
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || { rm -f "$1"; return 0; }
  kill "$pid" 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null
  rm -f "$1"
}

# Jobs first, so slurmd does not leave orphaned steps behind; then the daemons, munge last (slurm needs it to
# shut down cleanly).
if [ -s "$dir/slurmctld.pid" ] && command -v scancel >/dev/null; then
  timeout 10 scancel --quiet --full "--user=$(id -un)" >/dev/null 2>&1 || true
fi
stop "$dir/slurmd.pid" "$conf"
stop "$dir/slurmctld.pid" "$conf"
stop "$dir/munge/munged.pid" "$dir/munge/munge.socket"
rm -f "$dir/munged.pid"
exit 0
