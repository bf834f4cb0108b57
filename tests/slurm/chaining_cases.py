#!/usr/bin/python3
"""End-to-end cases for what runs beside a live training run: --then evaluation chaining (real SLURM and the
local executor) and watch mode. Same command line as launcher_cases.py:

    chaining_cases.py CASE --launcher BIN --engine BIN --workdir DIR
"""
import collections
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import launcher_cases  # noqa: E402
from launcher_cases import (PY, SMALL, Run, check, check_outputs, launcher_env,  # noqa: E402
                            make_fixture, path_without_slurm, records, run, status, wait_for_jobs, write_log)

WRITER = os.path.join(HERE, "training_writer.py")


def write_eval_script(work):
    """An evaluation job as users write one: #SBATCH lines of its own, the HF folder as $1. It records what it was
    given, one file per (log, iteration), and fails when the folder is not a converted model."""
    marks = os.path.join(work, "evaluated")
    os.makedirs(marks)
    path = os.path.join(work, "eval.sbatch")
    with open(path, "w") as f:
        f.write("#!/bin/bash\n#SBATCH --job-name=m2h-eval\n#SBATCH --time=00:05:00\nset -eu\n"
                'test -s "$1/config.json"\n'
                f'echo "$1|$M2H_HF_PATH|$M2H_ITERATION|$M2H_LOG_NAME|$M2H_CHECKPOINT_PATH" > "{marks}/$M2H_LOG_NAME-$M2H_ITERATION"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path, marks


def check_marks(marks, save, fx, log, iterations):
    """Each converted iteration was evaluated once, with its own folder in $1 and the environment."""
    got = sorted(os.listdir(marks))
    want = sorted(f"{log}-{it}" for it in iterations)
    check(got == want, f"evaluations ran for {got}, expected {want}")
    for it in iterations:
        out = os.path.join(save, log, "hf", f"iter_{it:07d}")
        with open(os.path.join(marks, f"{log}-{it}")) as f:
            fields = f.read().strip().split("|")
        check(fields == [out, out, str(it), log, os.path.join(fx, "checkpoint", f"iter_{it:07d}")],
              f"evaluation of iteration {it} got {fields}")


def run_with_evaluation(work, r, log_name):
    """Run `r`'s fixture, its log in logs/, and the evaluation script: (fixture, logs, script, marks)."""
    fx = make_fixture(work, r)
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    write_log(os.path.join(logs, log_name + ".out"), r, os.path.join(fx, "checkpoint"))
    return (fx, logs) + write_eval_script(work)


def case_then(a, work):
    """--then on real SLURM: every converted iteration's evaluation runs after its conversion, with its folder;
    a conversion that fails never starts its evaluation (SLURM cancels it) and status says so."""
    r = Run("opensci", f"--arch opensci --tp 1 --pp 1 {SMALL} --iterations 100,200")
    fx, logs, script, marks = run_with_evaluation(work, r, "run_5")
    env = launcher_env(a.engine)

    def launch(tag, *extra):
        save, convert_logs = os.path.join(work, "save-" + tag), os.path.join(work, "convert-" + tag)
        run([a.launcher, "--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", logs,
             "--save_checkpoints_dir", save, "--executor", "slurm", "--memory-budget", "300KB", "--then", script,
             *extra], env=env)
        recs = records(convert_logs)
        check(len(recs) == 1 and all(t.get("then_job") for t in recs[0]["tasks"]), f"no chained jobs recorded: {recs}")
        wait_for_jobs([recs[0]["job_id"]] + [t["then_job"] for t in recs[0]["tasks"]], timeout=200)
        return save, convert_logs

    save, convert_logs = launch("good")
    check_outputs([(os.path.join(save, "run_5", "hf", f"iter_{it:07d}"), os.path.join(fx, "expected", f"iter_{it:07d}"))
                   for it in r.iterations], convert_logs, assets=False)
    check_marks(marks, save, fx, "run_5", r.iterations)
    st = status(a.launcher, convert_logs)
    check(all(row["then_state"] == "completed" for row in st.values()), f"status of the evaluations: {st}")
    table = run([a.launcher, "status", "--convert_logs_dir", convert_logs]).stdout
    check("THEN" in table and "completed" in table, "the status table does not show the evaluations")

    # The engine refuses an unknown option: every conversion fails, no evaluation may start.
    shutil.rmtree(marks)
    os.makedirs(marks)
    save, convert_logs = launch("failing", "--engine-arg=--no-such-option")
    check(not os.listdir(marks), f"an evaluation ran after a failed conversion: {os.listdir(marks)}")
    st = status(a.launcher, convert_logs)
    check(all(row["state"] == "failed" and row["then_state"] == "cancelled" for row in st.values()),
          f"expected failed conversions and cancelled evaluations: {st}")


def case_then_local(a, work):
    """--then with the local executor (and from a profile): run after each conversion that succeeded, never after
    one that failed."""
    r = Run("llama", f"--arch llama --tp 1 --pp 1 {SMALL} --heads 8 --kv-heads 2 --iterations 100,200")
    fx, logs, script, marks = run_with_evaluation(work, r, "llama_3")
    env = dict(os.environ, PATH=path_without_slurm(work), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    save, convert_logs = os.path.join(work, "save"), os.path.join(work, "convert")
    cmd = [a.launcher, "--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", logs, "--save_checkpoints_dir", save]
    profile = os.path.join(work, "profile.json")
    with open(profile, "w") as f:
        json.dump({"then": script}, f)
    run(cmd + ["--iterations", "100", "--profile", profile], env=env)  # --then from a profile
    check_marks(marks, save, fx, "llama_3", [100])
    run(cmd + ["--iterations", "200", "--then", script, "--engine-arg=--no-such-option"], env=env, expect=1)
    check_marks(marks, save, fx, "llama_3", [100])
    st = status(a.launcher, convert_logs)
    check(st[("llama_3", "100")]["then_state"] == "completed" and st[("llama_3", "200")]["then_state"] == "not run",
          f"status of the local evaluations: {st}")


# The watched runs: one per checkpoint format, three saves each.
WATCH_RUNS = [
    Run("watch-torch", f"--arch opensci --tp 2 --pp 1 {SMALL} --iterations 100,200,300"),
    Run("watch-dist", f"--arch opensci --tp 2 --pp 1 {SMALL} --iterations 100,200,300 --format torch_dist"),
]
PAUSE = 2  # seconds between a save's steps, and the watch interval: a half-written torch_dist save is always seen


def start_training(a, work, r, logs):
    """Submits a "training" job for run `r` that saves its fixture's iterations while the watcher runs; returns
    (fixture, checkpoint folder, job id) once its log has the arguments block."""
    fx = make_fixture(work, r)
    text, dest = os.path.join(work, r.name + ".log-text"), os.path.join(work, "train", r.name)
    write_log(text, r, dest, finished=False)
    cmd = [PY, WRITER, "--log-text", text, "--source", os.path.join(fx, r.subdir), "--dest", dest, "--format", r.format,
           "--iterations", ",".join(map(str, r.iterations)), "--pause", str(PAUSE), "--end-line"]
    job = run(["sbatch", "--parsable", "--job-name=train", "--output=" + os.path.join(logs, r.name + "_%j.out"),
               "--wrap", shlex.join(cmd)]).stdout.strip()
    log = os.path.join(logs, f"{r.name}_{job}.out")
    deadline = time.time() + 60
    while not (os.path.exists(log) and "end of arguments" in open(log).read()):
        check(time.time() < deadline, f"training job {job} did not start within 60 s")
        time.sleep(0.2)
    return fx, dest, job


def check_watched(a, convert_logs, save, trained):
    """Every saved iteration converted exactly once (a premature try would have failed and been resubmitted) and
    bit-exact; trained: (run, fixture, job)."""
    per_output = collections.Counter(t["output"] for rec in records(convert_logs) for t in rec["tasks"])
    pairs = [(os.path.join(save, f"{r.name}_{job}", "hf", f"iter_{it:07d}"), os.path.join(fx, "expected", f"iter_{it:07d}"))
             for r, fx, job in trained for it in r.iterations]
    check(sorted(per_output) == sorted(out for out, _ in pairs) and set(per_output.values()) == {1},
          f"not each iteration submitted exactly once: {dict(per_output)}")
    check_outputs(pairs, convert_logs, assets=False)
    st = status(a.launcher, convert_logs)
    check(all(row["state"] == "converted" for row in st.values()), f"status after the watch: {st}")


def watch_args(work, logs):
    convert_logs, save = os.path.join(work, "convert"), os.path.join(work, "save")
    return convert_logs, save, ["--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", logs,
                                "--save_checkpoints_dir", save, "--executor", "slurm", "--memory-budget", "300KB",
                                "--interval", f"{PAUSE}s"]


def case_watch(a, work):
    """Watch in the foreground while two training jobs (torch and torch_dist) save: each iteration is converted
    once, none while half-written, and the watcher ends by itself once both jobs have ended."""
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    trained = []
    for r in WATCH_RUNS:
        fx, _, job = start_training(a, work, r, logs)
        trained.append((r, fx, job))
    convert_logs, save, args = watch_args(work, logs)
    p = run([a.launcher, "watch", *args], env=launcher_env(a.engine), timeout=200)
    check("watch over: every training run has ended and is converted" in p.stderr, "the watch did not end by itself")
    check(re.search(r"watch-dist_\d+: iter_\d+ is still being saved", p.stderr),
          "the watcher never saw a torch_dist save in progress")
    check_watched(a, convert_logs, save, trained)


def case_watch_job(a, work):
    """Watch as a SLURM job that resubmits itself every interval: the training job's iterations are converted
    once each, and the chain of watch jobs ends by itself after the training job."""
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    r = WATCH_RUNS[0]
    fx, _, job = start_training(a, work, r, logs)
    convert_logs, save, args = watch_args(work, logs)
    env = launcher_env(a.engine)
    p = run([a.launcher, "watch", *args, "--as-slurm-job", "--until", "10m"], env=env)
    check("watch job" in p.stderr, "no watch job submitted")
    p = run([a.launcher, "watch", *args, "--as-slurm-job"], env=env)
    check("is watched already" in p.stderr, "a second watch of the same folder was submitted")
    deadline = time.time() + 240
    while True:
        active = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout.split()
        if not any(name.startswith("m2h-watch-") or name == "train" for name in active):
            break
        check(time.time() < deadline, f"the watch jobs did not end within 240 s: {active}")
        time.sleep(1)
    watch_logs = sorted(n for n in os.listdir(convert_logs) if n.startswith("m2h-watch-") and n.endswith(".out"))
    print(f"{len(watch_logs)} watch job(s)")
    check(len(watch_logs) >= 2, f"the watch job never resubmitted itself: {watch_logs}")
    with open(os.path.join(convert_logs, watch_logs[-1])) as f:
        last = f.read()
    check("watch over: every training run has ended and is converted" in last, f"last watch job did not end the watch:\n{last}")
    wait_for_jobs([rec["job_id"] for rec in records(convert_logs)])
    check_watched(a, convert_logs, save, [(r, fx, job)])


CASES = {"then": case_then, "then_local": case_then_local, "watch": case_watch, "watch_job": case_watch_job}


if __name__ == "__main__":
    sys.exit(launcher_cases.main(CASES))
