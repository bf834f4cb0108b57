#!/usr/bin/env bash
# Starts a private multi-host SLURM cluster on this machine for the cross-host tests: one network namespace per
# compute host (veth pairs on a bridge, addresses in a private 10.77.X.0/24 of this cluster's own), each with its
# own host name (UTS namespace) and its own slurmd; one slurmctld on the bridge; one munged whose socket every
# host shares. All hosts see this machine's filesystem, as cluster nodes see a shared parallel filesystem.
#
#   ci/cluster-up.sh        # then: export SLURM_CONF=${M2H_CLUSTER_DIR:-/tmp/m2h-cluster}/slurm.conf
#   ci/cluster-down.sh      # stops the daemons, removes the namespaces, links and files it made
#
# Hosts are node01..nodeNN (M2H_CLUSTER_HOSTS, default 3), with M2H_CLUSTER_CPUS CPUs declared each (default 4).
# `ci/cluster-run.sh node02 CMD...` runs CMD "on" a host; $dir/hosts lists "<name> <netns> <address> <link>" per
# host, <link> being this machine's end of the host's veth pair (to shape or cut).
# Run again while the cluster is up, it repairs it: a host whose link is down gets it back up, a host whose
# slurmd is gone (killed, as when a host dies) gets a new one, and hosts SLURM marked down are resumed.
# Each host's slurmd (and so every job step on it) also has a mount namespace of its own, in which
# $dir/etc-hosts (every host's name and address) is bound over /etc/hosts; nothing in this machine's /etc changes.
set -euo pipefail

dir=${M2H_CLUSTER_DIR:-/tmp/m2h-cluster}
hosts=${M2H_CLUSTER_HOSTS:-3}
cpus=${M2H_CLUSTER_CPUS:-4}
wait_s=${M2H_CLUSTER_WAIT_S:-60}
conf=$dir/slurm.conf
export SLURM_CONF=$conf

say() { echo "ci/cluster-up.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=ci/slurm-lib.sh
. "$(dirname "$0")/slurm-lib.sh"

# Names, ports and subnet derived from the folder, so that clusters of two build trees do not collide.
sum=$(printf '%s' "$dir" | cksum | cut -d' ' -f1)
tag=$(printf '%04x' $((sum % 65536)))
subnet=10.77.$((sum % 250 + 1))
bridge=m2hb$tag
ctld_port=$((25000 + sum % 2500 * 2))
slurmd_port=$((ctld_port + 1))
netns_of() { echo "m2h$tag-n$1"; }
node_of() { printf 'node%02d' "$1"; }

# --- what this needs ------------------------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "network namespaces, bridges and slurmd need root; run as root"
install_packages slurmctld slurmd slurm-client munge iproute2 util-linux
probe=m2hprobe$$
if ! ip netns add "$probe" 2>/tmp/m2h-netns-probe.err; then
  die "the kernel refuses network namespaces ($(cat /tmp/m2h-netns-probe.err)); the multi-host tests need CAP_SYS_ADMIN and CONFIG_NET_NS (a privileged container or a VM)"
fi
ip netns del "$probe"
ip link add "${bridge}p" type bridge 2>/tmp/m2h-netns-probe.err || die "cannot create a bridge: $(cat /tmp/m2h-netns-probe.err) (CONFIG_BRIDGE)"
ip link del "${bridge}p"
unshare --uts true 2>/dev/null || die "the kernel refuses UTS namespaces (unshare --uts); each host needs its own host name"

# --- already up? ----------------------------------------------------------------------------------------------
all_idle() {
  local states
  states=$(sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
  [ "$(grep -cE ' (idle|mixed|allocated)$' <<<"$states")" -eq "$hosts" ]
}
wait_idle() {
  local i
  for ((i = 0; i < wait_s * 2; i++)); do
    all_idle && return 0
    sinfo -h -N -o '%N %T' 2>/dev/null | awk '$2 ~ /^(down|drain|fail)/ { print $1 }' | while read -r n; do
      scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true
    done
    sleep 0.5
  done
  say "not every host became idle within ${wait_s}s:"
  sinfo -N >&2 || true
  tail -n 20 "$dir"/log/*.log >&2 || true
  return 1
}
# A host's slurmd in its own network, host name and /etc/hosts, seen by slurmd and by every job step it starts.
# (Not `ip netns exec`: it mounts a fresh /sys, without the cgroup filesystem slurmd reads.)
start_slurmd() { # start_slurmd NODE NETNS
  mkdir -p "$dir/spool/$1" "$dir/tmp/$1" "$dir/tmp/host"
  nsenter "--net=/run/netns/$2" unshare --uts --mount --propagation private sh -c \
    "mount --bind '$dir/etc-hosts' /etc/hosts && mount --bind '$dir/tmp/$1' '$dir/tmp/host' &&
     hostname $1 && exec slurmd -f '$conf' -N $1" </dev/null \
    || die "slurmd of $1 did not start; see $dir/log/slurmd-$1.log"
}
if [ -s "$dir/hosts" ] && ours "$dir/slurmctld.pid" "$conf" && [ "$(wc -l <"$dir/hosts")" -eq "$hosts" ]; then
  while read -r node ns addr link; do
    if [ -n "$link" ] && ! ip -o link show dev "$link" 2>/dev/null | grep -q '[<,]UP[,>]'; then
      say "repairing $node: its link $link was down"
      ip link set "$link" up
    fi
    if ! ours "$dir/slurmd-$node.pid" "$conf"; then
      say "repairing $node: its slurmd was gone"
      start_slurmd "$node" "$ns"
    fi
  done <"$dir/hosts"
  wait_idle && { say "already up ($conf)"; exit 0; }
fi
"$(dirname "$0")/cluster-down.sh" >/dev/null 2>&1 || true

mkdir -p "$dir"/{log,state,spool,munge}
chmod 755 "$dir"

# --- the network: a bridge on this machine, one namespace per host ----------------------------------------------
ip link add "$bridge" type bridge
ip addr add "$subnet.1/24" dev "$bridge"
ip link set "$bridge" up
: >"$dir/hosts"
for ((i = 1; i <= hosts; i++)); do
  echo "$(node_of "$i") $(netns_of "$i") $subnet.$((10 + i)) $bridge$(printf '%02d' "$i")" >>"$dir/hosts"
done
{
  printf '127.0.0.1 localhost\n'
  awk '{ print $3, $1 }' "$dir/hosts"
} >"$dir/etc-hosts"
while read -r node ns addr link; do
  ip netns add "$ns"
  ip link add "$link" type veth peer name eth0 netns "$ns"
  ip link set "$link" master "$bridge" up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done <"$dir/hosts"

# --- munge: a private key and socket, shared by every host through the filesystem ------------------------------
start_munged

# --- slurm.conf -----------------------------------------------------------------------------------------------
mem_mb=$(awk -v h="$hosts" '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 / h }' /proc/meminfo)
ctld_host=$(hostname -s)
{
  cat <<EOF
# Generated by ci/cluster-up.sh: a private cluster of $hosts hosts in network namespaces for megatron2hf's tests.
ClusterName=m2h-multi
SlurmctldHost=$ctld_host($subnet.1)
SlurmdSpoolDir=$dir/spool/%n
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmdLogFile=$dir/log/slurmd-%n.log
# Each host's own scratch (PMIx puts its per-step folders there): the same path on every host, bound to
# $dir/tmp/<host> in that host's mount namespace, as a node-local /tmp would be.
TmpFS=$dir/tmp/host
# A host that stops answering is marked down (and its jobs ended) after SlurmdTimeout.
SlurmdTimeout=30
EOF
  slurm_conf_common "$ctld_port" "$slurmd_port"
  echo "NodeName=DEFAULT CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
  while read -r node ns addr link; do
    echo "NodeName=$node NodeAddr=$addr"
  done <"$dir/hosts"
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} >"$conf"

# --- the daemons ----------------------------------------------------------------------------------------------
slurmctld -f "$conf" -i || die "slurmctld did not start; see $dir/log/slurmctld.log"
while read -r node ns addr link; do
  start_slurmd "$node" "$ns"
done <"$dir/hosts"
wait_idle || die "cluster did not come up"
say "up: $hosts hosts ($(awk '{ printf "%s%s=%s", (NR > 1 ? ", " : ""), $1, $3 }' "$dir/hosts")), $cpus CPUs each; export SLURM_CONF=$conf"
