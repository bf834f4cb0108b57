#!/usr/bin/env python3
"""--max-read-rate: a conversion paced to a low rate takes at least its source bytes over the rate, not much more,
and stays bit-exact. One rank, so that rank reads every byte the plan needs (at least the model's bytes)."""
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
sys.path.insert(0, HERE)
from e2e_case import case_setup, mpirun  # noqa: E402

RATE = 100_000  # bytes per second: the ~370 KB fixture takes about 3.7 s


def main():
    a, work, ckpt, expected = case_setup("read_rate_case", [
        "--arch", "opensci", "--layers", "4", "--hidden", "64", "--heads", "4", "--kv-heads", "4", "--ffn", "128",
        "--padded-vocab", "256", "--tp", "2", "--pp", "1", "--dtype", "bf16"])
    out = os.path.join(work, "hf")
    start = time.time()
    p = mpirun(1, a.engine, ["--input", ckpt, "--output", out, "--max-read-rate", "100KB"], timeout=120)
    took = time.time() - start
    problems = []
    if p.returncode != 0:
        problems.append(f"the paced conversion exited {p.returncode}")
    m = re.search(r"for (\d+) model bytes", p.stderr)
    if not m:
        problems.append("no final line with the model bytes")
    else:
        least = int(m.group(1)) / RATE
        print(f"{m.group(1)} model bytes at {RATE} B/s: at least {least:.2f} s; took {took:.2f} s")
        if took < least:
            problems.append(f"took {took:.2f} s, less than {least:.2f} s: the reads were not paced")
        if took > 2 * least + 10:
            problems.append(f"took {took:.2f} s, far more than {least:.2f} s: the pacing oversleeps")
    if "reads paced to at most 100.00 KB/s per rank" not in p.stderr:
        problems.append("the rate was not logged")
    if subprocess.run([PY, os.path.join(SRC, "tests/e2e/check_hf_output.py"), "--output", out,
                       "--expected", expected]).returncode:
        problems.append("the paced output is not bit-exact")
    bad = subprocess.run([a.engine, "--input", ckpt, "--output", out + "-bad", "--max-read-rate", "fast"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
    if bad.returncode == 0 or "--max-read-rate" not in bad.stderr:
        problems.append(f"a bad rate was not refused by name: {bad.stderr.strip()}")
    for line in problems:
        print("FAIL: " + line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
