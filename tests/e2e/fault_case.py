#!/usr/bin/env python3
"""One rank fails (an error, or an exception outside the error protocol) at each stage of a conversion: every
rank must exit non-zero promptly, the failing rank's message must appear once, and no output may be left."""
import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    work = os.path.join(a.workdir, "fault_case")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    subprocess.run(["/usr/bin/python3", os.path.join(SRC, "tests/fixtures/megatron_fixture.py"), "--out", work,
                    "--arch", "llama", "--tp", "2", "--pp", "2", "--dtype", "bf16"], check=True)
    failures = 0
    for stage in ("index", "plan", "move", "finish"):
        for kind, pattern in (("", "megatron2hf: error: fault injection: simulated failure at stage %s on rank 1"),
                              (":internal", "megatron2hf: internal error on rank 1: simulated internal failure at stage %s on rank 1")):
            out = os.path.join(work, "out", stage + kind.replace(":", "_"))
            env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                       M2H_TEST_FAIL=f"1:{stage}{kind}")
            start = time.time()
            try:
                p = subprocess.run(["mpirun", "-np", "3", "--oversubscribe", a.engine, "--input",
                                    os.path.join(work, "checkpoint"), "--output", out], env=env, capture_output=True,
                                   text=True, timeout=60)
            except subprocess.TimeoutExpired:
                print(f"FAIL: {stage}{kind}: hang (no exit within 60 s)")
                failures += 1
                continue
            lines = [l for l in p.stderr.splitlines() if l.startswith("megatron2hf:")]
            expected = pattern % stage
            # An error is cleaned up at once; an abort (like a crash) may leave the hidden staging folder, which
            # the next run removes (kill_case.py covers that).
            staging = os.path.join(os.path.dirname(out), "." + os.path.basename(out) + ".m2h-partial")
            ok = (p.returncode != 0 and len(lines) == 1 and lines[0] == expected and not os.path.exists(out)
                  and (kind or not os.path.exists(staging)))
            print(f"{stage}{kind}: exit {p.returncode} in {time.time() - start:.1f}s: {lines}")
            if not ok:
                print(f"FAIL: expected exactly {expected!r}, a non-zero exit and no output")
                print(p.stderr[-3000:])
                failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
