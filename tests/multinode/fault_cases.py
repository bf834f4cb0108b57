#!/usr/bin/python3
"""Faults of one host in the middle of a cross-host conversion, on the 3-host cluster of ci/cluster-up.sh
(M2H_CLUSTER_DIR, SLURM_CONF set by ctest). The launcher submits a conversion on 3 hosts x 2 ranks, paced
(--engine-arg=--max-read-rate) so that it is still running when, with its ranks on all three hosts,

  host_dies  every process of node03's network namespace is killed at once (its slurmd, the job step's
             slurmstepd and its ranks): the host died;
  link_cut   node03's link to the bridge goes down: the host is alive but unreachable.

Then: the job ends NODE_FAIL within a bounded time (SLURM notices the host after SlurmdTimeout; the job scripts'
--no-requeue keeps SLURM from queueing it again), no rank is left on the other hosts, no output folder is left,
`status` says failed, the host is restored (ci/cluster-up.sh restarts a dead slurmd, brings a link up and
resumes the host), and the next launch, without the pacing, converts the iteration bit-exactly on three hosts.
No staging folder is left either: rank 0 (on node01), asked to stop while it waits on ranks that will never
answer, gives up on them after the engine's grace of a few seconds and removes it before SLURM's SIGKILL.
Whatever fails, the cluster is repaired for the next case.

    fault_cases.py CASE --engine BIN --launcher BIN --workdir DIR
"""
import glob
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "slurm"))
import launcher_cases  # noqa: E402
from cross_host_cases import HOSTS, PER_HOST, multinode_launch, run  # noqa: E402
from launcher_cases import CaseFailed, check  # noqa: E402

CLUSTER_UP = os.path.join(SRC, "ci", "cluster-up.sh")
VICTIM = "node03"
# The fixture is about 1.4 MB, some 230 KB read per rank: at 1 KB/s per rank its reads would take minutes.
SLOW_RATE = "1KB"


def slurm_config(*names):
    p = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=True)
    values = dict(re.findall(r"^(\w+)\s*=\s*(\d+)", p.stdout, re.M))
    return [int(values[n]) for n in names]


def job_end_bound():
    """From the fault to the job's end, at most: slurmctld pings each host every SlurmdTimeout/3 and marks it down
    once it has not answered for SlurmdTimeout (a ping to a cut-off host may itself take MessageTimeout); then the
    job's steps on the other hosts get SIGTERM and, KillWait later, SIGKILL. 15 s more for a loaded machine."""
    slurmd_timeout, message_timeout, kill_wait = slurm_config("SlurmdTimeout", "MessageTimeout", "KillWait")
    return slurmd_timeout + slurmd_timeout // 3 + message_timeout + kill_wait + 15


def cluster_dir():
    return os.environ["M2H_CLUSTER_DIR"]


def hosts():
    """{name: (netns, address, link)} from the cluster's hosts file (link: this machine's end of its veth pair)."""
    with open(os.path.join(cluster_dir(), "hosts")) as f:
        return {w[0]: tuple(w[1:4]) for w in (line.split() for line in f) if len(w) >= 4}


def netns_pids(node):
    p = subprocess.run(["ip", "netns", "pids", hosts()[node][0]], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split()]


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def node_states():
    p = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=30)
    return dict(line.split() for line in p.stdout.splitlines() if line.strip())


def job_states(job_id):
    p = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", job_id, "-o", "%i %T %R"], capture_output=True,
                       text=True, timeout=30)
    return p.stdout.strip()


def wait_until(what, predicate, timeout, interval=0.5):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise CaseFailed(f"{what}: not within {timeout}s")
        time.sleep(interval)


def marked_down_at(node):
    """When slurmctld last logged the host not responding and set it down (its log's local time), or None."""
    with open(os.path.join(cluster_dir(), "log", "slurmctld.log"), errors="replace") as f:
        hits = re.findall(rf"^\[([0-9T:.-]+)\] error: Nodes {node} not responding, setting DOWN", f.read(), re.M)
    return time.mktime(time.strptime(hits[-1].split(".")[0], "%Y-%m-%dT%H:%M:%S")) if hits else None


def staging_left(out):
    return glob.glob(os.path.join(os.path.dirname(out), ".*.m2h-partial*"))


def setup(a, work):
    cmd, env, convert_logs, save, fx = multinode_launch(a, work, "100")
    out = os.path.join(save, "llama_9", "hf", "iter_0000100")
    return cmd, env, convert_logs, out, os.path.join(fx, "expected", "iter_0000100")


def err_text(convert_logs, job_id):
    path = os.path.join(convert_logs, f"convert_full_{job_id}_0.err")
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def fault_case(a, work, fault, restore):
    """fault() takes VICTIM out while the job runs on it, restore() brings it back."""
    start = time.time()
    cmd, env, convert_logs, out, expected = setup(a, work)
    bound = job_end_bound()
    run(cmd + [f"--engine-arg=--max-read-rate={SLOW_RATE}"], env=env)
    recs = launcher_cases.records(convert_logs)
    check(len(recs) == 1 and len(recs[0]["tasks"]) == 1, f"expected one submission of one task: {recs}")
    with open(recs[0]["script"]) as f:
        check("#SBATCH --no-requeue" in f.read(), "the job script lets SLURM requeue the task after a node failure")
    job = recs[0]["job_id"]
    on_three = f"{HOSTS * PER_HOST} rank(s) on {HOSTS} host(s)"
    wait_until("the ranks running on three hosts", lambda: on_three in err_text(convert_logs, job), 60)
    ranks = wait_until(f"the engine's ranks in {VICTIM}'s namespace",
                       lambda: [p for p in netns_pids(VICTIM) if comm(p) == "megatron2hf"], 30)
    print(f"running on three hosts; {VICTIM} ({hosts()[VICTIM][0]}) holds ranks {ranks} among "
          f"{sorted(set(comm(p) for p in netns_pids(VICTIM)))}", flush=True)
    time.sleep(2)  # well into the paced reads

    fault_at = time.time()
    fault()
    launcher_cases.wait_for_jobs([job], timeout=bound)
    ended = time.time() - fault_at
    down = marked_down_at(VICTIM)
    noticed = f"{down - fault_at:.0f}s" if down and down >= int(fault_at) else "not logged"
    print(f"the job ended {ended:.1f}s after the fault (bound {bound}s); SLURM set {VICTIM} down after {noticed}; "
          f"{VICTIM}: {node_states().get(VICTIM)}; job: {job_states(job)}", flush=True)
    check(f"{job}_0 NODE_FAIL" in job_states(job) or f"{job} NODE_FAIL" in job_states(job),
          f"the job did not end NODE_FAIL: {job_states(job)}")
    for node in sorted(set(hosts()) - {VICTIM}):
        wait_until(f"the ranks on {node} gone", lambda: not [p for p in netns_pids(node) if comm(p) == "megatron2hf"], 10)
    orphans = [p for p in netns_pids(VICTIM) if comm(p) == "megatron2hf"]
    print(f"ranks still alive on {VICTIM}, which SLURM cannot reach: {orphans or 'none'}", flush=True)
    err = err_text(convert_logs, job)
    print(f"--- the job's .err\n{err[-3000:]}", flush=True)
    check(not os.path.exists(out), f"{out} exists after the fault")
    check(not staging_left(out), f"the stopped job left its staging folder: {staging_left(out)}")
    check(re.search(r"megatron2hf: error: SIG(TERM|KILL|USR1|INT): stopped before the conversion finished", err),
          "no rank said it stopped on SLURM's signal")
    row = launcher_cases.status(a.launcher, convert_logs)[("llama_9", "100")]
    check(row["state"] == "failed" and "NODE_FAIL" in row["detail"], f"status does not report the node failure: {row}")

    restored_at = time.time()
    restore()
    print(f"{VICTIM} restored in {time.time() - restored_at:.1f}s: {node_states()}", flush=True)
    # Back in touch, its slurmd is told to end the steps of the job SLURM already ended.
    wait_until(f"the cut-off ranks on {VICTIM} gone", lambda: not [p for p in netns_pids(VICTIM) if comm(p) == "megatron2hf"], 30)

    p = run(cmd, env=env)
    check("1 to convert" in p.stderr, "the failed iteration is not to be converted again")
    recs = launcher_cases.records(convert_logs)
    check(len(recs) == 2 and [t["output"] for t in recs[1]["tasks"]] == [out],
          f"expected one new submission for {out}, got {recs[1:]}")
    launcher_cases.wait_for_jobs([recs[1]["job_id"]], timeout=120)
    check(on_three in err_text(convert_logs, recs[1]["job_id"]), "the new conversion did not run on three hosts")
    launcher_cases.check_outputs([(out, expected)], convert_logs, assets=False)
    row = launcher_cases.status(a.launcher, convert_logs)[("llama_9", "100")]
    check(row["state"] == "converted", f"status after the second launch: {row}")
    check(not staging_left(out), f"staging folders left after the iteration was converted: {staging_left(out)}")
    # The cluster is whole again for the cases after this one.
    check(all(s == "idle" for s in node_states().values()), f"hosts not idle: {node_states()}")
    # A finished job's slurmstepd takes a moment to exit after the job's state says so: leftovers are what
    # outlives that moment.
    def left():
        return [f"{p} {comm(p)}" for p in netns_pids(VICTIM) if comm(p) != "slurmd"]
    try:
        wait_until(f"only slurmd left in {VICTIM}'s namespace", lambda: not left(), 20)
    except CaseFailed:
        check(False, f"processes left in {VICTIM}'s namespace: {left()}")
    print(f"{a.case}: job ended {ended:.1f}s after the fault, case {time.time() - start:.1f}s", flush=True)


def restore_cluster():
    run([CLUSTER_UP], timeout=120)


def repair(work):
    """After a case, passed or not: its jobs cancelled, every host's slurmd and link back (ci/cluster-up.sh)."""
    recs = launcher_cases.records(os.path.join(work, "convert_logs"))
    if recs:
        subprocess.run(["scancel", *[r["job_id"] for r in recs]], timeout=30)
    p = subprocess.run([CLUSTER_UP], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        print(f"ci/cluster-up.sh could not repair the cluster:\n{p.stderr[-2000:]}", flush=True)


def case_host_dies(a, work):
    """Every process of the host's namespace killed at once."""
    def fault():
        for _ in range(20):
            pids = netns_pids(VICTIM)
            if not pids:
                return
            print(f"killing {VICTIM}: " + ", ".join(f"{p} {comm(p)}" for p in pids), flush=True)
            for p in pids:
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        raise CaseFailed(f"processes in {VICTIM}'s namespace survive SIGKILL: {netns_pids(VICTIM)}")
    fault_case(a, work, fault, restore_cluster)


def case_link_cut(a, work):
    """The host's link down: its slurmd and ranks live on, cut off."""
    link = hosts()[VICTIM][2]
    fault_case(a, work, lambda: run(["ip", "link", "set", link, "down"]), restore_cluster)


CASES = {"host_dies": case_host_dies, "link_cut": case_link_cut}


if __name__ == "__main__":
    sys.exit(launcher_cases.main(CASES, after=repair))
