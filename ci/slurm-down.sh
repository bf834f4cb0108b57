#!/usr/bin/env bash
# Stops the private cluster that ci/slurm-up.sh started from $M2H_SLURM_DIR: only processes whose pid file is
# in that directory and whose command line names its config or socket. Other SLURM or munge daemons on this
# machine are left alone. Safe to call when nothing is running.
set -uo pipefail

dir=${M2H_SLURM_DIR:-/tmp/m2h-slurm}
conf=$dir/slurm.conf
export SLURM_CONF=$conf

say() { echo "ci/slurm-down.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=ci/slurm-lib.sh
. "$(dirname "$0")/slurm-lib.sh"

# Jobs first, so slurmd does not leave orphaned steps behind; then the daemons, munge last (slurm needs it to
# shut down cleanly).
cancel_jobs
stop_daemon "$dir/slurmd.pid" "$conf"
stop_daemon "$dir/slurmctld.pid" "$conf"
stop_daemon "$dir/munge/munged.pid" "$dir/munge/munge.socket"
rm -f "$dir/munged.pid"
exit 0
