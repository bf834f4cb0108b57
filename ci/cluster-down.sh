#!/usr/bin/env bash
# Stops the multi-host cluster ci/cluster-up.sh started from $M2H_CLUSTER_DIR: its jobs, its slurmd per host,
# slurmctld and munged (only processes whose pid files are in that folder and whose command lines name its
# config or socket), then removes its network namespaces, veth links and bridge.
# Safe to call when nothing is running.
set -uo pipefail

dir=${M2H_CLUSTER_DIR:-/tmp/m2h-cluster}
conf=$dir/slurm.conf
export SLURM_CONF=$conf
sum=$(printf '%s' "$dir" | cksum | cut -d' ' -f1)
tag=$(printf '%04x' $((sum % 65536)))
bridge=m2hb$tag

say() { echo "ci/cluster-down.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=ci/slurm-lib.sh
. "$(dirname "$0")/slurm-lib.sh"

cancel_jobs
for pidfile in "$dir"/slurmd-*.pid; do
  [ -e "$pidfile" ] && stop_daemon "$pidfile" "$conf"
done
stop_daemon "$dir/slurmctld.pid" "$conf"
stop_daemon "$dir/munge/munged.pid" "$dir/munge/munge.socket"

# The namespaces: anything still running in one (a step a dead slurmd left) goes with it.
for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep "^m2h$tag-n"); do
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
done
for link in $(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1 | grep "^$bridge"); do
  ip link del "$link" 2>/dev/null
done
rm -f "$dir/hosts"
exit 0
