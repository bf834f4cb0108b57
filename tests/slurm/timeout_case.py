#!/usr/bin/python3
"""The time limit under a real SLURM: a conversion paced far below what it needs to finish in --time 00:01:00
(--engine-arg=--max-read-rate) is stopped by SLURM's warning signal (the job scripts' --signal=USR1@60, which
SLURM's 30 s timer may send early) or by the SIGTERM at the limit. The job ends within a bounded time, neither
the output nor its staging folder is left, `status` says timeout, and the next launch, without the rate, converts
the iteration bit-exactly. Same command line as launcher_cases.py:

    timeout_case.py timeout --launcher BIN --engine BIN --workdir DIR
"""
import glob
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import launcher_cases  # noqa: E402
from launcher_cases import (SMALL, Run, check, check_outputs, launcher_env, make_fixture,  # noqa: E402
                            make_open_sci_hf, nine_args, records, run, status, wait_for_jobs, write_log)

# The model is about 370 KB: at 1 KB/s per rank its reads alone would take minutes, far past the one-minute limit.
SLOW_RATE = "1KB"
# The warning comes within SLURM's 30 s timer of the job's start, the limit's SIGTERM 60 to 90 s after it (the
# same timer); the engine then stops within seconds. Past this, the stop did not work.
JOB_END_S = 150


def case_timeout(a, work):
    r = Run("opensci", f"--arch opensci --tp 1 --pp 1 {SMALL} --iterations 100")
    fx = make_fixture(work, r)
    logs, save, convert_logs = (os.path.join(work, d) for d in ("logs", "save", "convert_logs"))
    os.makedirs(logs)
    write_log(os.path.join(logs, "slow_1.out"), r, os.path.join(fx, "checkpoint"))
    hf = make_open_sci_hf(work)
    out = os.path.join(save, "slow_1", "hf", "iter_0000100")
    env = launcher_env(a.engine)
    # The bare template: the engine runs directly on the allocation, no container.
    cmd = [a.launcher] + nine_args("m2h-test", "debug", convert_logs, "", "", "", hf, logs, save)
    cmd += ["--template", "bare", "--executor", "slurm"]

    start = time.time()
    run(cmd + ["--time", "00:01:00", f"--engine-arg=--max-read-rate={SLOW_RATE}"], env=env)
    recs = records(convert_logs)
    check(len(recs) == 1, f"expected one submission, got {len(recs)}")
    with open(recs[0]["script"]) as f:
        script = f.read()
    check("#SBATCH --time=00:01:00" in script and "#SBATCH --signal=USR1@60" in script,
          f"{recs[0]['script']}: the time limit or the warning signal is missing")
    check(f"--max-read-rate={SLOW_RATE}" in script, "the engine argument did not reach the job script")
    wait_for_jobs([recs[0]["job_id"]], timeout=JOB_END_S)
    ended = time.time() - start
    print(f"the paced job ended {ended:.1f}s after its launch", flush=True)

    errs = glob.glob(os.path.join(convert_logs, f"*_{recs[0]['job_id']}_0.err"))
    check(len(errs) == 1, f"expected the task's .err file, found {errs}")
    with open(errs[0], errors="replace") as f:
        err = f.read()
    print(f"--- {os.path.basename(errs[0])}\n{err[-2000:]}", flush=True)
    check(not os.path.exists(out), f"{out} exists after the time limit")
    partial = glob.glob(os.path.join(os.path.dirname(out), ".*.m2h-partial"))
    check(not partial, f"staging folders left: {partial}")
    row = status(a.launcher, convert_logs)[("slow_1", "100")]
    check(row["state"] == "timeout", f"status does not say timeout: {row}")
    # Usually the warning stopped it (the job then ends FAILED, and status reads the engine's line in the .err);
    # when SLURM sent the warning before the job step existed, the SIGTERM at the limit did (TIMEOUT).
    stopped = [s for s in ("SIGUSR1", "SIGTERM") if f"megatron2hf: error: {s}: stopped before the conversion" in err]
    print(f"stopped by {stopped[0] if stopped else 'the time limit, without the engine line in the .err'}", flush=True)
    check(stopped or "the time limit ended it" in row["detail"],
          f"neither the engine's line for a stop signal in the .err nor SLURM's TIMEOUT: {row}")

    # The next launch, without the rate, resubmits the iteration and converts it.
    p = run(cmd + ["--time", "00:10:00"], env=env)
    check("1 to convert" in p.stderr, "the timed-out iteration is not to be converted again")
    recs = records(convert_logs)
    check(len(recs) == 2 and [t["output"] for t in recs[1]["tasks"]] == [out],
          f"expected one new submission for {out}, got {recs[1:]}")
    wait_for_jobs([recs[1]["job_id"]])
    check_outputs([(out, os.path.join(fx, "expected", "iter_0000100"))], convert_logs)
    row = status(a.launcher, convert_logs)[("slow_1", "100")]
    check(row["state"] == "converted", f"status after the second launch: {row}")


if __name__ == "__main__":
    sys.exit(launcher_cases.main({"timeout": case_timeout}))
