#!/usr/bin/python3
"""End-to-end cases for megatron2hf-launch: realistic training logs beside real torch.save checkpoints, the
launcher run as users run it, and every converted iteration checked bit-exactly by tests/e2e/check_hf_output.py.

    launcher_cases.py CASE --launcher BIN --engine BIN --workdir DIR

Cases that need SLURM (e2e, quoting, status) expect the private cluster of ci/slurm-up.sh (SLURM_CONF set);
dry_run, local and no_checkpoint do not. Every wait is bounded: a job that hangs fails the case with a message.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "fixtures"))
import megatron_fixture  # noqa: E402  (the fixture writer's own args, so the logs say what the checkpoints hold)

PY = "/usr/bin/python3"
CHECKER = os.path.join(SRC, "tests", "e2e", "check_hf_output.py")
SMALL = "--layers 4 --hidden 64 --heads 4 --ffn 128 --padded-vocab 256 --dtype bf16"


class Run:
    """One training run: a fixture checkpoint and the .out log that training would have written for it.

    The checkpoint format follows the fixture's --format (torch → checkpoint/, torch_dist → checkpoint_dist/)."""

    def __init__(self, name, fixture_args):
        self.name = name
        self.fixture_args = fixture_args
        fmt = re.search(r"--format (\S+)", fixture_args)
        self.format = fmt.group(1) if fmt else "torch"
        self.subdir = "checkpoint_dist" if self.format == "torch_dist" else "checkpoint"
        its = re.search(r"--iterations (\S+)", fixture_args)
        self.iterations = [int(x) for x in (its.group(1) if its else "100").split(",")]


# The e2e runs: one training run per checkpoint format.
E2E_RUNS = [
    Run("opensci-tp2-torch", f"--arch opensci --tp 2 --pp 1 {SMALL} --iterations 100,200"),
    Run("opensci-tp2-dist", f"--arch opensci --tp 2 --pp 1 {SMALL} --iterations 100,200 --format torch_dist"),
]


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------

class CaseFailed(Exception):
    pass


def check(cond, message):
    if not cond:
        raise CaseFailed(message)


def run(cmd, timeout=300, env=None, expect=0, cwd=None):
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise CaseFailed(f"{cmd[0]} did not finish within {timeout}s")
    sys.stdout.write(p.stdout)
    sys.stdout.write(p.stderr)
    if expect is not None and p.returncode != expect:
        raise CaseFailed(f"{os.path.basename(cmd[0])} exited {p.returncode}, expected {expect}")
    return p


def make_fixture(work, run_):
    out = os.path.join(work, "fx-" + run_.name)
    if not os.path.isdir(os.path.join(out, "expected")):
        run([PY, os.path.join(SRC, "tests", "fixtures", "megatron_fixture.py"), "--out", out]
            + shlex.split(run_.fixture_args))
    return out


def write_log(path, run_, root, host="node0042", finished=True, iterations=None):
    """A training .out as Megatron-LM + torchrun (--role host: --tee 3) + LAION's sbatch write it."""
    _, spec = megatron_fixture.parse_cli(["--out", "/unused"] + shlex.split(run_.fixture_args))
    iterations = iterations or run_.iterations
    args = megatron_fixture.make_args(spec, iteration=iterations[-1], save_dir=root)
    args.ckpt_format = run_.format
    p = f"[{host}:0]:"
    lines = ["SLURM_GPUS_PER_NODE:  4", "NUM_GPUS:  8", "MICRO_BATCH_SIZE:  2", "GLOBAL_BATCH_SIZE:  64",
             "SEQUENCE LENGTH:  128", f"TRAIN_ITERS:  {args.train_iters}",
             f"pretrain_gpt.py --num-layers {args.num_layers} --hidden-size {args.hidden_size} "
             f"--num-attention-heads {args.num_attention_heads} --save {root} --ckpt-format {run_.format}",
             f"{p}using world size: 8, data-parallel size: 2, tensor-model-parallel size: "
             f"{args.tensor_model_parallel_size}, pipeline-model-parallel size: {args.pipeline_model_parallel_size}",
             p + "-" * 24 + " arguments " + "-" * 24]
    for name in sorted(vars(args), key=lambda n: n.lower()):  # upstream _print_args
        lines.append(p + "  {} {} {}".format(name, "." * (48 - len(name)), getattr(args, name)))
    lines += [p + "-" * 20 + " end of arguments " + "-" * 21,
              f"{p}> building HuggingFaceTokenizer tokenizer ...",
              f"{p} > padded vocab (size: 250) with 6 dummy tokens (new size: {args.padded_vocab_size})",
              f"{p}Number of parameters in transformer layers in billions:  0.00",
              f"{p}Total number of parameters in billions: 0.00"]
    for i, it in enumerate(iterations):
        for r in range(2):
            lines.append(f"[{host}:{r}]: [2025-03-31 05:54:{i:02d}] iteration {it:>8d}/{args.train_iters:>8d} | "
                         f"consumed samples: {it * 64} | lm loss: 6.258318E+00 | grad norm: 1.234 |")
        if finished and it == iterations[-1]:
            lines.append(f"{p}[after training is done] datetime: 2025-03-31 06:00:00 ")
        lines.append(f"{p}saving checkpoint at iteration {it:7d} to {root} in {run_.format} format")
        lines.append(f"{p}  successfully saved checkpoint from iteration {it:7d} to {root} "
                     f"[ t 1/{args.tensor_model_parallel_size}, p 1/{args.pipeline_model_parallel_size} ]")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


ASSET_FILES = {"modeling_opensci.py": "# modeling\n", "configuration_opensci.py": "# configuration\n",
               "tokenizer.json": '{"model": {}}\n', "tokenizer_config.json": '{"tokenizer_class": "GPTNeoXTokenizer"}\n',
               "special_tokens_map.json": '{"eos_token": "<|endoftext|>"}\n', "vocab.json": "{}\n"}


def make_open_sci_hf(work):
    """An Open-Sci-hf checkout: sample/ with the files the outputs get, and two they must not get."""
    sample = os.path.join(work, "Open-Sci-hf", "sample")
    os.makedirs(sample, exist_ok=True)
    for name, text in dict(ASSET_FILES, **{"config.json": '{"hidden_size": 2048}\n', "README.md": "x\n"}).items():
        with open(os.path.join(sample, name), "w") as f:
            f.write(text)
    return os.path.dirname(sample)


def nine_args(account, partition, convert_logs, image, opensci, megatron, hf, logs, save):
    return ["--account", account, "--partition", partition, "--convert_logs_dir", convert_logs,
            "--container_image", image, "--opensci_megatron_path", opensci, "--megatron_path", megatron,
            "--open_sci_hf_path", hf, "--train_logs_dir_or_path", logs, "--save_checkpoints_dir", save]


def records(convert_logs):
    path = os.path.join(convert_logs, "megatron2hf-launch.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_for_jobs(job_ids, timeout=150):
    """Until no task of these jobs is pending or running in squeue; fails the case after `timeout` s."""
    deadline = time.time() + timeout
    ids = ",".join(sorted(set(job_ids)))
    while True:
        p = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%F|%K|%T"], capture_output=True, text=True,
                           timeout=60)
        active = [l for l in p.stdout.split() if l.split("|")[0] in ids.split(",")
                  and l.split("|")[2] not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                                              "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED")]
        if p.returncode == 0 and not active:
            return
        if time.time() > deadline:
            subprocess.run(["squeue", "-r", "-t", "all"])
            raise CaseFailed(f"jobs {ids} still not finished after {timeout}s: {active}")
        time.sleep(1)


def check_outputs(pairs, convert_logs=None, assets=True):
    """pairs: (output folder, expected folder). Runs the independent checker on each, two at a time."""
    def one(pair):
        out, exp = pair
        p = subprocess.run([PY, CHECKER, "--output", out, "--expected", exp], capture_output=True, text=True,
                           timeout=300)
        return out, p
    failures = []
    with ThreadPoolExecutor(2) as pool:
        for out, p in pool.map(one, pairs):
            print(f"check {out}: {p.stdout.strip() or p.stderr.strip()[-300:]}", flush=True)
            if p.returncode != 0:
                failures.append(out)
    if failures and convert_logs:
        for name in sorted(os.listdir(convert_logs)):
            if name.endswith(".err") or name.endswith(".out"):
                with open(os.path.join(convert_logs, name), errors="replace") as f:
                    print(f"--- {name}\n{f.read()[-2000:]}")
    check(not failures, f"not bit-exact: {failures}")
    if assets:
        for out, _ in pairs:
            for name, text in ASSET_FILES.items():
                with open(os.path.join(out, name)) as f:
                    check(f.read() == text, f"{out}/{name}: not the Open-Sci-hf sample file")
            # README.md is this iteration's model card, not the Open-Sci-hf sample's, and names its training log.
            with open(os.path.join(out, "README.md")) as f:
                card = f.read()
            log = os.path.basename(os.path.dirname(os.path.dirname(out)))
            check(card.startswith("---\nlibrary_name: transformers\n") and f"| training log | `{log}.out` |" in card,
                  f"{out}/README.md: not a model card naming {log}.out")


def status(launcher, convert_logs, extra=()):
    p = run([launcher, "status", "--convert_logs_dir", convert_logs, "--format", "json", *extra])
    return {(r["log"], r["iteration"]): r for r in json.loads(p.stdout)}


SLURM_CLIENTS = ("sbatch", "srun", "squeue", "sacct", "scontrol", "salloc", "scancel", "sinfo")


def path_without_slurm(work):
    """A PATH folder that links every program on PATH except SLURM's: this machine as if SLURM were absent."""
    bindir = os.path.join(work, "no-slurm-bin")
    os.makedirs(bindir, exist_ok=True)
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = os.path.join(bindir, name)
            if name not in SLURM_CLIENTS and not os.path.lexists(link):
                os.symlink(os.path.join(d, name), link)
    return bindir


def launcher_env(engine):
    # The engine on PATH, as a container image would have it; the fake apptainer beside it.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.join(HERE, "bin"), os.path.dirname(engine), env["PATH"]])
    return env


# ---------------------------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------------------------

def case_e2e(a, work):
    """The nine original arguments (container image through the apptainer template, run here by a checking
    stand-in), realistic logs for a plain run and a cool-down run whose checkpoint folder symlinks the
    pre-cool-down one, every expected iteration bit-exact; then again (nothing resubmitted); then one output
    removed (only that one redone)."""
    logs, save, convert_logs = (os.path.join(work, d) for d in ("logs", "save", "convert_logs"))
    os.makedirs(logs)
    hf = make_open_sci_hf(work)
    image = os.path.join(work, "megatron2hf.sif")
    open(image, "w").close()
    expected = {}  # (log name, iteration) -> expected folder

    for r in E2E_RUNS:
        fx = make_fixture(work, r)
        write_log(os.path.join(logs, f"{r.name}_1001.out"), r, os.path.join(fx, r.subdir))
        for it in r.iterations:
            expected[(f"{r.name}_1001", it)] = os.path.join(fx, "expected", f"iter_{it:07d}")

    # Cool-down: the pre-cool-down run saved 100 and 200; the cool-down run starts from a symlink to 200 and
    # saves 300 into its own folder (as LAION's cooldown_helper.sh leaves it).
    cool = Run("llama-pp2-cooldown", f"--arch llama --tp 1 --pp 2 {SMALL} --heads 8 --kv-heads 2 --ffn 160 "
                                     "--padded-vocab 512 --iterations 100,200,300")
    fx = make_fixture(work, cool)
    pre_root, cool_root = os.path.join(work, "runs", "pre", "checkpoints"), os.path.join(work, "runs", "cool", "checkpoints")
    if not os.path.isdir(pre_root):
        os.makedirs(cool_root)
        shutil.copytree(os.path.join(fx, "checkpoint"), pre_root)
        shutil.move(os.path.join(pre_root, "iter_0000300"), os.path.join(cool_root, "iter_0000300"))
        with open(os.path.join(pre_root, "latest_checkpointed_iteration.txt"), "w") as f:
            f.write("200")
        os.symlink(os.path.join(pre_root, "iter_0000200"), os.path.join(cool_root, "iter_0000200"))
        shutil.copy(os.path.join(fx, "checkpoint", "latest_checkpointed_iteration.txt"), cool_root)
    write_log(os.path.join(logs, "llama-pre_2001.out"), cool, pre_root, iterations=[100, 200], finished=False)
    write_log(os.path.join(logs, "llama-cooldown_2002.out"), cool, cool_root, iterations=[300])
    for it in (100, 200):
        expected[("llama-pre_2001", it)] = os.path.join(fx, "expected", f"iter_{it:07d}")
    for it in (100, 200, 300):  # 100 is borrowed from beside the symlink's target
        expected[("llama-cooldown_2002", it)] = os.path.join(fx, "expected", f"iter_{it:07d}")

    env = launcher_env(a.engine)
    env["FAKE_APPTAINER_LOG"] = os.path.join(work, "apptainer-calls.log")
    cmd = [a.launcher] + nine_args("m2h-test", "debug", convert_logs, image, "/opt/Megatron-LM-Open-Sci",
                                   "/opt/Megatron-LM", hf, logs, save)
    # 360 KB per rank: the 366 KB and 460 KB models are sized to 4 ranks (ceil(3 x size / budget)).
    # One task per iteration here (--iterations-per-task 1): the array, its throttle and per-task job logs.
    cmd += ["--memory-budget", "360KB", "--max-parallel-jobs", "2", "--time", "00:10:00", "--iterations-per-task", "1"]
    p = run(cmd, env=env)
    check("not used" in p.stderr and p.stderr.count("--opensci_megatron_path") == 1,
          "the unused Megatron paths were not reported exactly once")
    recs = records(convert_logs)
    n_logs = len(E2E_RUNS) + 2  # and the pre-cool-down and cool-down logs
    check(len(recs) == n_logs, f"expected {n_logs} job arrays (one per log), got {len(recs)}")
    check(sum(len(r["tasks"]) for r in recs) == len(expected), "not one array task per iteration")
    for r in recs:
        with open(r["script"]) as f:
            script = f.read()
        check("#SBATCH --ntasks-per-node=4" in script and "#SBATCH --array=0-" in script and "%2" in script,
              f"{r['script']}: sizing or throttle missing")
        check("#SBATCH --account=m2h-test" in script and "#SBATCH --partition=debug" in script,
              f"{r['script']}: account/partition missing")
    wait_for_jobs([r["job_id"] for r in recs])
    pairs = [(os.path.join(save, log, "hf", f"iter_{it:07d}"), exp) for (log, it), exp in sorted(expected.items())]
    check_outputs(pairs, convert_logs)
    with open(env["FAKE_APPTAINER_LOG"]) as f:
        calls = f.read()
    check(calls.count(image) >= len(expected), "the engine did not run through the container runtime")
    for r in recs:
        for t in r["tasks"]:
            jid = f"{r['job_id']}_{t['task']}"
            check(os.path.exists(os.path.join(convert_logs, f"convert_full_{jid}.out")), f"no job log for {jid}")

    # Again: everything is converted, nothing is submitted.
    p = run(cmd, env=env)
    check(len(records(convert_logs)) == n_logs, "the second launch submitted again")
    check("3 converted, 0 queued or running, 0 being saved, 0 to convert" in p.stderr, "second launch did not see the cool-down's 3 converted")
    check(p.stderr.count("0 queued or running, 0 being saved, 0 to convert") == n_logs, "a log still has iterations to convert")

    # One output removed: exactly that one is redone.
    gone = os.path.join(save, "llama-cooldown_2002", "hf", "iter_0000100")
    shutil.rmtree(gone)
    run(cmd, env=env)
    recs2 = records(convert_logs)
    check(len(recs2) == n_logs + 1 and [t["output"] for t in recs2[-1]["tasks"]] == [gone],
          f"expected one new submission for {gone}, got {recs2[n_logs:]}")
    wait_for_jobs([recs2[-1]["job_id"]])
    check_outputs([(gone, expected[("llama-cooldown_2002", 100)])], convert_logs)
    st = status(a.launcher, convert_logs)
    check(len(st) == len(expected) and all(r["state"] == "converted" for r in st.values()),
          f"status does not say all converted: {st}")


HOSTILE = "x 'q' \"d\" $(touch PWNED) `touch PWNED2` ;touch PWNED3; $HOME \\ *"


def case_quoting(a, work):
    """Log name, checkpoint folder, output folder, job-log folder and Open-Sci-hf path all hostile; converted
    under SLURM with the bare template, and nothing but the engine ran."""
    r = Run("opensci", f"--arch opensci --tp 1 --pp 1 {SMALL} --iterations 100")
    fx = make_fixture(work, r)
    base = os.path.join(work, "w " + HOSTILE)
    root = os.path.join(base, "ckpt " + HOSTILE)
    shutil.copytree(os.path.join(fx, "checkpoint"), root)
    logs = os.path.join(base, "logs " + HOSTILE)
    os.makedirs(logs)
    log_name = "run " + HOSTILE
    write_log(os.path.join(logs, log_name + ".out"), r, root)
    hf = make_open_sci_hf(os.path.join(base, "hf " + HOSTILE))
    # SLURM drops backslashes from job-log paths and expands % in them: the launcher refuses such a folder.
    save, convert_logs = os.path.join(base, "save " + HOSTILE), os.path.join(work, "convert " + HOSTILE)
    cmd = [a.launcher] + nine_args("m2h-test", "debug", convert_logs, "", "", "", hf, logs, save)
    cmd += ["--template", "bare", "--executor", "slurm"]
    p = run(cmd, env=launcher_env(a.engine), cwd=work, expect=1)
    check("SLURM cannot write job logs into a path containing" in p.stderr, "no clear error for a '\\' job-log folder")
    convert_logs = os.path.join(work, "convert " + HOSTILE.replace("\\", ""))
    cmd = [a.launcher] + nine_args("m2h-test", "debug", convert_logs, "", "", "", hf, logs, save)
    cmd += ["--template", "bare", "--executor", "slurm"]
    run(cmd, env=launcher_env(a.engine), cwd=work)
    recs = records(convert_logs)
    check(len(recs) == 1, f"expected one submission, got {len(recs)}")
    wait_for_jobs([recs[0]["job_id"]])
    out = os.path.join(save, log_name, "hf", "iter_0000100")
    check_outputs([(out, os.path.join(fx, "expected", "iter_0000100"))], convert_logs)
    pwned = [os.path.join(d, f) for d, _, files in os.walk(work) for f in files if f.startswith("PWNED")]
    pwned += [p for p in ("PWNED", "PWNED2", "PWNED3") if os.path.exists(os.path.join(os.path.expanduser("~"), p))]
    check(not pwned, f"a file name ran as a command: {pwned}")


def case_status(a, work):
    """queued (held), failed (a damaged checkpoint), not submitted, then converted after release; a launch while
    the held job is queued submits nothing."""
    r = Run("opensci", f"--arch opensci --tp 2 --pp 1 {SMALL} --iterations 100,200")
    fx = make_fixture(work, r)
    logs, save, convert_logs = (os.path.join(work, d) for d in ("logs", "save", "convert_logs"))
    os.makedirs(logs)
    write_log(os.path.join(logs, "good_1.out"), r, os.path.join(fx, "checkpoint"))
    broken = os.path.join(work, "broken", "checkpoint")
    shutil.copytree(os.path.join(fx, "checkpoint"), broken)
    os.remove(os.path.join(broken, "iter_0000200", "mp_rank_01", "model_optim_rng.pt"))
    write_log(os.path.join(logs, "broken_2.out"), r, broken)
    # mpirun inside the allocation (instead of srun) for the held job; as root it needs OpenMPI's consent.
    env = dict(launcher_env(a.engine), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    common = ["--profile", "localhost", "--convert_logs_dir", convert_logs, "--save_checkpoints_dir", save,
              "--memory-budget", "300KB"]

    run([a.launcher, *common, "--train_logs_dir_or_path", os.path.join(logs, "good_1.out"), "--iterations", "100",
         "--sbatch-arg=--hold", "--mpi-launcher", "mpirun"], env=env)
    run([a.launcher, *common, "--train_logs_dir_or_path", os.path.join(logs, "broken_2.out"), "--iterations", "200"],
        env=env)
    recs = records(convert_logs)
    check(len(recs) == 2, f"expected 2 submissions, got {len(recs)}")
    held, failing = recs[0]["job_id"], recs[1]["job_id"]
    wait_for_jobs([failing])
    st = status(a.launcher, convert_logs, ["--train_logs_dir_or_path", logs, "--save_checkpoints_dir", save])
    print(run([a.launcher, "status", "--convert_logs_dir", convert_logs]).stdout)
    check(st[("good_1", "100")]["state"] == "queued", f"held job not queued: {st[('good_1', '100')]}")
    check("JobHeldUser" in st[("good_1", "100")]["detail"], "the hold is not shown")
    check(st[("broken_2", "200")]["state"] == "failed", f"damaged checkpoint not failed: {st[('broken_2', '200')]}")
    check(st[("broken_2", "200")]["detail"].endswith(".err"), "a failed task does not point to its .err file")
    check(st[("good_1", "200")]["state"] == "not submitted", "iteration 200 of good_1 should be not submitted")
    check(st[("broken_2", "100")]["state"] == "not submitted", "iteration 100 of broken_2 should be not submitted")

    p = run([a.launcher, *common, "--train_logs_dir_or_path", os.path.join(logs, "good_1.out"), "--iterations", "100"],
            env=env)
    check(len(records(convert_logs)) == 2 and "already queued" in p.stderr, "a queued iteration was submitted again")

    run(["scontrol", "release", held])
    wait_for_jobs([held])
    st = status(a.launcher, convert_logs)
    check(st[("good_1", "100")]["state"] == "converted", f"released job not converted: {st[('good_1', '100')]}")
    check_outputs([(os.path.join(save, "good_1", "hf", "iter_0000100"), os.path.join(fx, "expected", "iter_0000100"))],
                  convert_logs, assets=False)


def case_local(a, work):
    """sbatch not on PATH: the local executor is chosen (and said), the same script runs under mpirun here; a
    failing iteration is reported with a non-zero exit and shows as failed in status."""
    r = Run("llama", f"--arch llama --tp 2 --pp 1 {SMALL} --heads 8 --kv-heads 2 --iterations 100,200")
    fx = make_fixture(work, r)
    logs, save, convert_logs = (os.path.join(work, d) for d in ("logs", "save", "convert_logs"))
    os.makedirs(logs)
    write_log(os.path.join(logs, "llama_7.out"), r, os.path.join(fx, "checkpoint"))
    env = dict(os.environ, PATH=path_without_slurm(work), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    hf = make_open_sci_hf(work)
    cmd = [a.launcher, "--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", logs,
           "--save_checkpoints_dir", save, "--open_sci_hf_path", hf, "--ntasks-per-node", "2"]
    p = run(cmd, env=env)
    check("sbatch is not on PATH" in p.stderr and "--executor local" in p.stderr, "the local fallback was not said")
    check_outputs([(os.path.join(save, "llama_7", "hf", f"iter_{it:07d}"), os.path.join(fx, "expected", f"iter_{it:07d}"))
                   for it in (100, 200)], convert_logs)
    rec = records(convert_logs)
    check(len(rec) == 1 and rec[0]["executor"] == "local" and [t["exit_code"] for t in rec[0]["tasks"]] == [0, 0],
          f"local record wrong: {rec}")
    # A damaged iteration: non-zero exit, and status says failed.
    shutil.rmtree(os.path.join(save, "llama_7", "hf", "iter_0000200"))
    damaged = os.path.join(fx, "checkpoint", "iter_0000200", "mp_rank_01", "model_optim_rng.pt")
    os.rename(damaged, damaged + ".aside")
    try:
        run(cmd, env=env, expect=1)
    finally:
        os.rename(damaged + ".aside", damaged)
    st = status(a.launcher, convert_logs)
    check(st[("llama_7", "200")]["state"] == "failed" and st[("llama_7", "100")]["state"] == "converted",
          f"status after a local failure: {st}")
    errs = [n for n in os.listdir(convert_logs) if n.endswith(".err")]
    check(any("missing rank file" in open(os.path.join(convert_logs, n)).read() for n in errs),
          "the engine's error is not in the task's .err file")


def case_dry_run(a, work):
    """Scripts are written (bare, apptainer, pyxis render as valid bash), nothing is submitted or recorded;
    profile values apply and the command line wins over them."""
    r = Run("opensci", f"--arch opensci --tp 2 --pp 1 {SMALL} --iterations 100,200,300")
    fx = make_fixture(work, r)
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    write_log(os.path.join(logs, "a_1.out"), r, os.path.join(fx, "checkpoint"))
    profile = os.path.join(work, "profile.json")
    with open(profile, "w") as f:
        json.dump({"account": "prof-acct", "partition": "prof-part", "qos": "prof_qos", "time": "02:00:00",
                   "mpi": "pmi2", "max_parallel_jobs": 5, "sbatch-arg": ["--gres=gpu:0"]}, f)
    # An sbatch that only records being called: a dry run must never call it.
    fake = os.path.join(work, "fake-sbatch")
    os.makedirs(fake)
    calls = os.path.join(work, "sbatch-calls")
    with open(os.path.join(fake, "sbatch"), "w") as f:
        f.write(f"#!/bin/sh\necho \"$@\" >> {shlex.quote(calls)}\necho 1\n")
    os.chmod(os.path.join(fake, "sbatch"), 0o755)
    env = launcher_env(a.engine)
    env["PATH"] = fake + os.pathsep + env["PATH"]
    for template, extra in (("bare", []), ("apptainer", ["--container_image", "/images/m2h.sif"]),
                            ("pyxis", ["--container_image", "nvcr.io#m2h:1"])):
        convert_logs = os.path.join(work, "convert_" + template)
        p = run([a.launcher, "--profile", profile, "--account", "cli-acct", "--convert_logs_dir", convert_logs,
                 "--train_logs_dir_or_path", logs, "--save_checkpoints_dir", os.path.join(work, "save"),
                 "--template", template, "--executor", "slurm", "--dry-run", "--iterations", "latest",
                 "--nodes", "1", "--ntasks-per-node", "3", *extra], env=env)
        check("dry run" in p.stderr, "the dry run was not announced")
        script = os.path.join(convert_logs, "convert_a_1.sbatch")
        with open(script) as f:
            text = f.read()
        for line in ("#SBATCH --account=cli-acct", "#SBATCH --partition=prof-part", "#SBATCH --qos=prof_qos",
                     "#SBATCH --time=02:00:00", "#SBATCH --array=0%5", "#SBATCH --ntasks-per-node=3",
                     "#SBATCH --output=%x_%A_%a.out", "#SBATCH --error=%x_%A_%a.err", "MPI='pmi2'",
                     "ITERATIONS=('300')"):
            check(line in text, f"{script}: missing {line!r}")
        check(run(["bash", "-n", script]).returncode == 0, f"{script}: not valid bash")
        check(not records(convert_logs), "a dry run recorded a submission")
        check(not os.path.exists(os.path.join(work, "save")), "a dry run created output folders")
    check(not os.path.exists(calls), "a dry run called sbatch")
    # The bundled example profile loads by name and fills the script.
    convert_logs = os.path.join(work, "convert_example")
    run([a.launcher, "--profile", "example", "--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", logs,
         "--save_checkpoints_dir", os.path.join(work, "save"), "--dry-run", "--open_sci_hf_path", make_open_sci_hf(work)],
        env=env)
    with open(os.path.join(convert_logs, "convert_a_1.sbatch")) as f:
        text = f.read()
    check("#SBATCH --account=my_project_account" in text and "CONTAINER_IMAGE='/shared/images/megatron2hf.sif'" in text,
          "the example profile did not apply")
    check(not os.path.exists(calls), "a dry run called sbatch")


def case_no_checkpoint(a, work):
    """A log whose checkpoint folder is gone and a log that is not a training log are reported and skipped;
    the good log still gets its script; no logs at all is an error."""
    r = Run("opensci", f"--arch opensci --tp 1 --pp 1 {SMALL} --iterations 100")
    fx = make_fixture(work, r)
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    write_log(os.path.join(logs, "good_1.out"), r, os.path.join(fx, "checkpoint"))
    write_log(os.path.join(logs, "gone_2.out"), r, os.path.join(work, "deleted", "checkpoint"))
    with open(os.path.join(logs, "junk_3.out"), "w") as f:
        f.write("srun: error: node0042: task 0: Exited with exit code 1\n")
    convert_logs = os.path.join(work, "convert")
    p = run([a.launcher, "--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", logs,
             "--save_checkpoints_dir", os.path.join(work, "save"), "--executor", "slurm", "--dry-run"],
            env=launcher_env(a.engine))
    check(re.search(r"skipping gone_2: .*deleted/checkpoint: checkpoint folder not found", p.stderr),
          "the missing checkpoint folder was not reported")
    check(re.search(r"skipping .*junk_3.out: not a Megatron training log", p.stderr), "the junk log was not reported")
    check(os.path.exists(os.path.join(convert_logs, "convert_good_1.sbatch")), "the good log got no script")
    check(not os.path.exists(os.path.join(convert_logs, "convert_gone_2.sbatch")), "the gone log got a script")
    empty = os.path.join(work, "empty")
    os.makedirs(empty)
    p = run([a.launcher, "--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", empty,
             "--save_checkpoints_dir", os.path.join(work, "save")], expect=1)
    check(f"No train logs found in {empty}" in p.stderr, "no error for an empty log folder")


CASES = {"e2e": case_e2e, "quoting": case_quoting, "status": case_status, "local": case_local,
         "dry_run": case_dry_run, "no_checkpoint": case_no_checkpoint}


def main(cases=CASES, after=None):
    """Runs one of `cases` (CASE --launcher --engine --workdir); after(work), when given, runs whatever happened."""
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=sorted(cases))
    ap.add_argument("--launcher", required=True)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    work = os.path.join(a.workdir, a.case)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    start = time.time()
    try:
        cases[a.case](a, work)
    except CaseFailed as e:
        print(f"FAILED {a.case}: {e}", flush=True)
        return 1
    finally:
        if after:
            after(work)
    print(f"PASSED {a.case} in {time.time() - start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
