#!/usr/bin/python3
"""End-to-end cases for what runs beside a live training run: --then evaluation chaining (real SLURM and the
local executor) and watch mode. Same command line as launcher_cases.py:

    chaining_cases.py CASE --launcher BIN --engine BIN --workdir DIR
"""
import os
import shutil
import stat
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import launcher_cases  # noqa: E402
from launcher_cases import (SMALL, CaseFailed, Run, check, launcher_env, make_fixture, path_without_slurm,  # noqa: E402
                            records, run, status, wait_for_jobs, write_log, check_outputs)


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


def case_then(a, work):
    """--then on real SLURM: every converted iteration's evaluation runs after its conversion, with its folder;
    a conversion that fails never starts its evaluation (SLURM cancels it) and status says so."""
    r = Run("opensci", f"--arch opensci --tp 1 --pp 1 {SMALL} --iterations 100,200")
    fx = make_fixture(work, r)
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    write_log(os.path.join(logs, "run_5.out"), r, os.path.join(fx, "checkpoint"))
    script, marks = write_eval_script(work)
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
    """--then with the local executor: run after each conversion that succeeded, never after one that failed."""
    r = Run("llama", f"--arch llama --tp 1 --pp 1 {SMALL} --heads 8 --kv-heads 2 --iterations 100,200")
    fx = make_fixture(work, r)
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    write_log(os.path.join(logs, "llama_3.out"), r, os.path.join(fx, "checkpoint"))
    script, marks = write_eval_script(work)
    env = dict(os.environ, PATH=path_without_slurm(work), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    save, convert_logs = os.path.join(work, "save"), os.path.join(work, "convert")
    cmd = [a.launcher, "--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", logs, "--save_checkpoints_dir",
           save, "--then", script]
    run(cmd + ["--iterations", "100"], env=env)
    check_marks(marks, save, fx, "llama_3", [100])
    run(cmd + ["--iterations", "200", "--engine-arg=--no-such-option"], env=env, expect=1)
    check_marks(marks, save, fx, "llama_3", [100])
    st = status(a.launcher, convert_logs)
    check(st[("llama_3", "100")]["then_state"] == "completed" and st[("llama_3", "200")]["then_state"] == "not run",
          f"status of the local evaluations: {st}")


CASES = {"then": case_then, "then_local": case_then_local}


if __name__ == "__main__":
    sys.exit(launcher_cases.main(CASES))
