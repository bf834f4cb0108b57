#!/usr/bin/python3
"""Several iterations per array task (--iterations-per-task) on the real SLURM of ci/slurm-up.sh: one engine run
per task converts its iterations one after another; records, status, resubmission and the skip logic still work
per iteration, also when one iteration of a task fails.

    batching_cases.py CASE --launcher BIN --engine BIN --workdir DIR
"""
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import launcher_cases  # noqa: E402
from launcher_cases import (SMALL, Run, check, check_outputs, launcher_env, make_fixture, records, run,  # noqa: E402
                            status, wait_for_jobs, write_log)


def case_batched(a, work):
    r = Run("opensci", f"--arch opensci --tp 2 --pp 1 {SMALL} --iterations 100,200,300,400,500")
    fx = make_fixture(work, r)
    logs, save, convert_logs = (os.path.join(work, d) for d in ("logs", "save", "convert_logs"))
    os.makedirs(logs)
    write_log(os.path.join(logs, "run_4.out"), r, os.path.join(fx, "checkpoint"))
    env = launcher_env(a.engine)
    cmd = [a.launcher, "--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", logs, "--save_checkpoints_dir",
           save, "--executor", "slurm", "--memory-budget", "300KB", "--iterations-per-task", "2"]
    out = {it: os.path.join(save, "run_4", "hf", f"iter_{it:07d}") for it in r.iterations}
    exp = {it: os.path.join(fx, "expected", f"iter_{it:07d}") for it in r.iterations}

    p = run(cmd, env=env)
    check("5 iteration(s) in 3 task(s)" in p.stderr, "five iterations were not put in three tasks")
    rec = records(convert_logs)[-1]
    check([(t["task"], t["iteration"]) for t in rec["tasks"]] == [(0, "100"), (0, "200"), (1, "300"), (1, "400"), (2, "500")],
          f"tasks of the record: {rec['tasks']}")
    with open(rec["script"]) as f:
        script = f.read()
    check("ITERATIONS=('100,200' '300,400' '500')" in script and "#SBATCH --array=0-2" in script, "the script's batches")
    wait_for_jobs([rec["job_id"]])
    check_outputs([(out[it], exp[it]) for it in r.iterations], convert_logs, assets=False)
    with open(os.path.join(convert_logs, f"convert_full_{rec['job_id']}_0.err")) as f:
        check("converted 2 of 2 iteration(s)" in f.read(), "task 0 did not convert its two iterations in one engine run")

    # Iteration 400 damaged, 300 and 400 to redo: their task converts 300 and fails on 400 alone.
    for it in (300, 400):
        shutil.rmtree(out[it])
    rank_file = os.path.join(fx, "checkpoint", "iter_0000400", "mp_rank_01", "model_optim_rng.pt")
    os.rename(rank_file, rank_file + ".aside")
    try:
        run(cmd, env=env)
        rec = records(convert_logs)[-1]
        check([t["iteration"] for t in rec["tasks"]] == ["300", "400"] and {t["task"] for t in rec["tasks"]} == {0},
              f"expected one task of 300 and 400: {rec['tasks']}")
        wait_for_jobs([rec["job_id"]])
    finally:
        os.rename(rank_file + ".aside", rank_file)
    st = status(a.launcher, convert_logs)
    check(st[("run_4", "300")]["state"] == "converted" and st[("run_4", "400")]["state"] == "failed",
          f"status after a half-failed task: {st[('run_4', '300')]}, {st[('run_4', '400')]}")
    with open(os.path.join(convert_logs, f"convert_full_{rec['job_id']}_0.err")) as f:
        err = f.read()
    check(re.search(r"error: .*iter_0000400.*missing rank file", err) and "failed: 400" in err,
          f"the task's log does not name the failed iteration:\n{err[-1500:]}")

    # The next launch resubmits 400 alone; 300 and the others are skipped.
    p = run(cmd, env=env)
    check("4 converted, 0 queued or running, 0 being saved, 1 to convert" in p.stderr, "the relaunch did not redo 400 only")
    rec = records(convert_logs)[-1]
    wait_for_jobs([rec["job_id"]])
    check_outputs([(out[it], exp[it]) for it in r.iterations], convert_logs, assets=False)


CASES = {"batched": case_batched}

if __name__ == "__main__":
    sys.exit(launcher_cases.main(CASES))
