#!/usr/bin/env python3
"""Signals: a conversion that gets SIGTERM (on every rank, as SLURM sends it at the time limit), SIGUSR1 (SLURM's
--signal warning, here to one rank only) or SIGINT stops: every rank exits non-zero within seconds, one error line
names the signal, and neither the output nor its staging folder is left. The checkpoint is then converted."""
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
sys.path.insert(0, HERE)
from e2e_case import case_setup  # noqa: E402
from kill_case import alive, ranks_of  # noqa: E402


def engine_cmd(a, ckpt, out, paced=False):
    # A small budget makes many rounds; paced reads (several seconds for this model) make sure the signal lands
    # mid-conversion however fast the machine is.
    return ["mpirun", "-np", str(a.ranks), "--oversubscribe", a.engine, "--input", ckpt, "--output", out,
            "--memory-budget", "12KiB"] + (["--max-read-rate", "256KB"] if paced else [])


def stop_with(a, ckpt, out, staging, sig, every_rank):
    p = subprocess.Popen(engine_cmd(a, ckpt, out, paced=True), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline and not os.path.isdir(staging) and p.poll() is None:
        time.sleep(0.005)
    time.sleep(0.3)
    pids = ranks_of(out)
    problems = []
    if p.poll() is not None or len(pids) != a.ranks:
        problems.append(f"{signal.Signals(sig).name}: the conversion was not running with {a.ranks} ranks when signalled")
    for pid in pids if every_rank else pids[-1:]:
        os.kill(pid, sig)
    start = time.time()
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        problems.append(f"{signal.Signals(sig).name}: still running 60 s after the signal")
    took = time.time() - start
    name = signal.Signals(sig).name
    errors = [line for line in err.splitlines() if line.startswith("megatron2hf: error:")]
    print(f"{name} to {'every rank' if every_rank else 'one rank'}: exit {p.returncode} after {took:.1f}s: {errors}")
    if p.returncode == 0:
        problems.append(f"{name}: exit 0")
    if len(errors) != 1 or name not in errors[0]:
        problems.append(f"{name}: expected one error line naming {name}, got {errors}")
    if alive(pids):
        problems.append(f"{name}: ranks {alive(pids)} still alive")
    if os.path.exists(staging) or os.path.exists(out):
        problems.append(f"{name}: left {[p for p in (staging, out) if os.path.exists(p)]}")
    return problems


def main():
    a, work, ckpt, expected = case_setup("signal_case", [
        "--arch", "llama", "--layers", "4", "--hidden", "256", "--heads", "8", "--kv-heads", "2", "--ffn", "512",
        "--padded-vocab", "1024", "--tp", "2", "--pp", "2", "--dtype", "bf16"])
    out = os.path.join(work, "hf")
    staging = os.path.join(work, ".hf.m2h-partial")
    problems = []
    for sig, every_rank in [(signal.SIGTERM, True), (signal.SIGUSR1, False), (signal.SIGINT, True)]:
        problems += stop_with(a, ckpt, out, staging, sig, every_rank)
    again = subprocess.run(engine_cmd(a, ckpt, out), env=ENV, capture_output=True, text=True, timeout=180)
    if again.returncode or subprocess.run([PY, os.path.join(SRC, "tests/e2e/check_hf_output.py"), "--output", out,
                                           "--expected", expected]).returncode:
        problems.append("the conversion after the signals failed")
    for p in problems:
        print("FAIL: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
