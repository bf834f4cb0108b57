#!/usr/bin/python3
"""Cross-host cases on the multi-host cluster of ci/cluster-up.sh (M2H_CLUSTER_DIR, SLURM_CONF set by ctest):
the engine started by `srun -N 3 --ntasks-per-node 2 --mpi=pmix` from node01, Open MPI on TCP between hosts.

    cross_host_cases.py CASE --launcher BIN --engine BIN --workdir DIR

  engine    legacy and torch_dist fixtures and real megatron-core goldens, --readers writers and files: bit-exact
            (fixtures against their global weights, goldens against their recorded conversions) and the manifest's
            checksums equal to a single-host run's;
  hdf5      the HDF5 output written by ranks on three hosts, dataset by dataset against a single-host safetensors
            conversion (h5py);
  launcher  the launcher's multi-node job scripts (--nodes 3) submitted to the cluster: each task on three hosts,
            bit-exact.
"""
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
CHECKER = os.path.join(SRC, "tests", "e2e", "check_hf_output.py")
CLUSTER_RUN = os.path.join(SRC, "ci", "cluster-run.sh")
sys.path.insert(0, os.path.join(SRC, "tests", "slurm"))
import launcher_cases  # noqa: E402
from launcher_cases import CaseFailed, check  # noqa: E402
GOLDENS = ["mcore-0.19.2_llama_tp2_pp2_distopt_bf16", "mcore-0.16.1_qwen2_moe_tp2_pp1_ep2_shared_fp32"]
FIXTURE = "--arch llama --layers 4 --hidden 128 --heads 8 --kv-heads 2 --ffn 256 --padded-vocab 512 --tp 2 --pp 2"
HOSTS, PER_HOST = 3, 2


def run(cmd, timeout=300, env=None, expect=0):
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise CaseFailed(f"{os.path.basename(cmd[0])} did not finish within {timeout}s")
    sys.stdout.write(p.stdout[-4000:])
    sys.stdout.write(p.stderr[-4000:])
    if expect is not None and p.returncode != expect:
        raise CaseFailed(f"{' '.join(cmd[:3])}... exited {p.returncode}, expected {expect}")
    return p


def cluster_env():
    """Open MPI on TCP between hosts, over the cluster's own subnet only (and never UCX or OFI)."""
    with open(os.path.join(os.environ["M2H_CLUSTER_DIR"], "hosts")) as f:
        first = f.readline().split()[2]
    subnet = first.rsplit(".", 1)[0] + ".0/24"
    return dict(os.environ, OMPI_MCA_pml="ob1", OMPI_MCA_btl="self,vader,tcp", OMPI_MCA_btl_tcp_if_include=subnet,
                OMPI_MCA_oob_tcp_if_include=subnet)


def srun_engine(engine, args, expect=0):
    """The engine on HOSTS hosts x PER_HOST ranks, started from node01 as a user's srun would be."""
    cmd = [CLUSTER_RUN, "node01", "srun", f"--nodes={HOSTS}", f"--ntasks-per-node={PER_HOST}", "--mpi=pmix",
           "--kill-on-bad-exit=1", engine, *args]
    p = run(cmd, env=cluster_env(), expect=expect)
    if expect == 0:
        check(f"{HOSTS * PER_HOST} rank(s) on {HOSTS} host(s)" in p.stderr, "the ranks did not run on three hosts")
    return p


def mpirun_engine(engine, args, ranks=2):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl="self,vader")
    return run(["mpirun", "-np", str(ranks), "--oversubscribe", engine, *args], env=env)


def fixture(work, name, extra):
    out = os.path.join(work, name)
    if not os.path.isdir(os.path.join(out, "expected")):
        run([PY, os.path.join(SRC, "tests", "fixtures", "megatron_fixture.py"), "--out", out, *shlex.split(FIXTURE), *extra])
    expected = os.path.join(out, "expected", sorted(os.listdir(os.path.join(out, "expected")))[0])
    return os.path.join(out, "checkpoint_dist" if "torch_dist" in extra else "checkpoint"), expected


def checksums(folder):
    with open(os.path.join(folder, "megatron2hf.manifest.json")) as f:
        manifest = json.load(f)
    return {name: t["crc32c"] for name, t in manifest["tensors"].items()}


def case_engine(a, work):
    for fmt in ("torch", "torch_dist"):
        ckpt, expected = fixture(work, "fx-" + fmt, ["--format", fmt, "--dtype", "bf16"])
        single = os.path.join(work, f"single-{fmt}")
        mpirun_engine(a.engine, ["--input", ckpt, "--output", single])
        for readers in ("writers", "files"):
            out = os.path.join(work, f"{fmt}-{readers}")
            srun_engine(a.engine, ["--input", ckpt, "--output", out, "--readers", readers, "--memory-budget", "256KB"])
            run([PY, CHECKER, "--output", out, "--expected", expected])
            check(checksums(out) == checksums(single), f"{out}: manifest checksums differ from the single-host run")
    for name in GOLDENS:
        golden = os.path.join(SRC, "tests", "golden", name)
        with open(os.path.join(golden, "golden.json")) as f:
            recorded = json.load(f)["converted_sha256"]
        for fmt, files in recorded.items():
            for readers in ("writers", "files"):
                out = os.path.join(work, f"{name}-{fmt}-{readers}")
                srun_engine(a.engine, ["--input", os.path.join(golden, fmt), "--output", out, "--readers", readers])
                for file, digest in files.items():
                    with open(os.path.join(out, file), "rb") as f:
                        got = hashlib.sha256(f.read()).hexdigest()
                    check(got == digest, f"{out}/{file}: not the recorded conversion of real Megatron's checkpoint")
        print(f"ok: {name}: both formats, both reader modes, byte-identical to the recorded conversions")


def case_hdf5(a, work):
    sys.path.insert(0, os.path.join(SRC, "tests", "e2e"))
    import hdf5_case
    ckpt, expected = fixture(work, "fx-torch_dist", ["--format", "torch_dist", "--dtype", "bf16"])
    single = os.path.join(work, "single")
    mpirun_engine(a.engine, ["--input", ckpt, "--output", single])
    run([PY, CHECKER, "--output", single, "--expected", expected])
    h5 = os.path.join(work, "model.h5")
    for readers in ("writers", "files"):
        group = f"iter_{readers}"
        srun_engine(a.engine, ["--input", ckpt, "--output", h5, "--format", "hdf5", "--group", group,
                               "--readers", readers, "--memory-budget", "256KB"])
        hdf5_case.check_group(h5, group, hdf5_case.read_safetensors_folder(single), None, {}, None, dump=False)
    check(not hdf5_case.failures, f"HDF5 written across hosts: {hdf5_case.failures}")


def multinode_launch(a, work, iterations):
    """A training run (log llama_9) with a fixture of `iterations`, and the launcher command that converts it on
    HOSTS x PER_HOST ranks (a profile of nodes and tasks per node): (command, env, convert_logs, save, fixture)."""
    r = launcher_cases.Run("llama", f"{FIXTURE} --iterations {iterations}")
    fx = launcher_cases.make_fixture(work, r)
    logs, save, convert_logs = (os.path.join(work, d) for d in ("logs", "save", "convert_logs"))
    os.makedirs(logs)
    launcher_cases.write_log(os.path.join(logs, "llama_9.out"), r, os.path.join(fx, "checkpoint"))
    profile = os.path.join(work, "multinode.json")
    with open(profile, "w") as f:
        json.dump({"nodes": HOSTS, "ntasks_per_node": PER_HOST, "partition": "debug", "time": "00:10:00"}, f)
    env = dict(cluster_env(), PATH=os.path.dirname(a.engine) + os.pathsep + os.environ["PATH"])
    cmd = [a.launcher, "--profile", profile, "--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", logs,
           "--save_checkpoints_dir", save, "--executor", "slurm"]
    return cmd, env, convert_logs, save, fx


def case_launcher(a, work):
    cmd, env, convert_logs, save, fx = multinode_launch(a, work, "100,200")
    run(cmd, env=env)
    recs = launcher_cases.records(convert_logs)
    check(len(recs) == 1 and len(recs[0]["tasks"]) == 2, f"expected one array of two tasks: {recs}")
    with open(recs[0]["script"]) as f:
        script = f.read()
    check(f"#SBATCH --nodes={HOSTS}" in script and f"#SBATCH --ntasks-per-node={PER_HOST}" in script,
          "the job script does not ask for three nodes")
    launcher_cases.wait_for_jobs([recs[0]["job_id"]], timeout=240)
    for t in recs[0]["tasks"]:
        err = os.path.join(convert_logs, f"convert_full_{recs[0]['job_id']}_{t['task']}.err")
        with open(err) as f:
            text = f.read()
        check(re.search(rf"{HOSTS * PER_HOST} rank\(s\) on {HOSTS} host\(s\)", text), f"{err}: not on three hosts:\n{text[-2000:]}")
    launcher_cases.check_outputs([(t["output"], os.path.join(fx, "expected", f"iter_{int(t['iteration']):07d}"))
                                  for t in recs[0]["tasks"]], convert_logs, assets=False)


CASES = {"engine": case_engine, "hdf5": case_hdf5, "launcher": case_launcher}


if __name__ == "__main__":
    sys.exit(launcher_cases.main(CASES))
