#!/usr/bin/env bash
# Runs a command "on" a host of the cluster ci/cluster-up.sh started: in the network, host-name and mount
# namespaces of that host's slurmd (so with its address, its name and the cluster's /etc/hosts).
#
#   ci/cluster-run.sh node01 srun -N 3 hostname
set -euo pipefail
dir=${M2H_CLUSTER_DIR:-/tmp/m2h-cluster}
[ $# -ge 2 ] || { echo "usage: ci/cluster-run.sh NODE COMMAND..." >&2; exit 2; }
node=$1
shift
pidfile=$dir/slurmd-$node.pid
[ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "ci/cluster-run.sh: $node: no slurmd running ($pidfile)" >&2; exit 1; }
export SLURM_CONF=${SLURM_CONF:-$dir/slurm.conf}
exec nsenter --target "$(cat "$pidfile")" --net --uts --mount "--wd=$PWD" -- "$@"
