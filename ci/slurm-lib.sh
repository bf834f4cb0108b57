# Shared by ci/slurm-up.sh, slurm-down.sh, cluster-up.sh and cluster-down.sh (sourced, not run): the private test
# clusters' packages, munged, the slurm.conf settings they share, and finding and stopping their own daemons.
# The caller defines say() and die() and sets $dir (the cluster's folder).

# ours PIDFILE PATTERN: a live process of ours, i.e. one whose command line names our config or socket.
ours() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

# stop_daemon PIDFILE PATTERN: TERM, then KILL after 10 s, of that process if it is ours; removes the pid file.
stop_daemon() {
  local pid i
  [ -s "$1" ] || return 0
  ours "$1" "$2" || { rm -f "$1"; return 0; }
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null
  rm -f "$1"
}

# install_packages PKG...: the missing ones, quietly; the package lists are only refreshed when apt cannot find
# the packages as they are.
install_packages() {
  local p missing=() sudo=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# start_munged: a private key and socket in $dir/munge. munged runs as the munge user, as Debian's service
# does; --force accepts a socket folder outside /run/munge.
start_munged() {
  [ -s "$dir/munge.key" ] || dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
  mkdir -p "$dir/munge"
  chown munge:munge "$dir/munge.key" "$dir/munge" 2>/dev/null || true
  chmod 400 "$dir/munge.key"
  chmod 755 "$dir/munge"
  runuser -u munge -- munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
    || die "munged did not start; see $dir/munge/munged.log"
}

# slurm_conf_common CTLD_PORT SLURMD_PORT: the slurm.conf lines both test clusters use.
slurm_conf_common() {
  cat <<CONF
SlurmctldPort=$1
SlurmdPort=$2
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers and CI VMs: track processes by their parent, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=pmix
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Nodes may declare more CPUs than the machine has: the engine is I/O-bound, oversubscription only costs speed.
SlurmdParameters=config_overrides
ReturnToService=2
# Short timers: the tests wait on them.
SchedulerParameters=sched_interval=2
MessageTimeout=20
KillWait=5
MinJobAge=300
InactiveLimit=0
MaxArraySize=1001
CONF
}

# cancel_jobs: every job of this user on the cluster of $SLURM_CONF, so that slurmd leaves no orphaned steps.
cancel_jobs() {
  if [ -s "$dir/slurmctld.pid" ] && command -v scancel >/dev/null; then
    timeout 10 scancel --quiet --full "--user=$(id -un)" >/dev/null 2>&1 || true
  fi
}
