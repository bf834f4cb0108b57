#!/usr/bin/python3
"""One cell of the interop matrix: real megatron-core VERSION writes case NAME in both formats, the engine converts
each under mpirun, and the outputs are checked against Megatron.

    interop_case.py --version 0.19.2 --case llama_tp2_pp2_gqa_fp32 --engine build/bin/megatron2hf --workdir DIR

Checks, each against something the engine did not produce:
  - both formats convert to byte-identical safetensors;
  - every output tensor is bit-exact against Megatron's own global weights, and the project's forward pass on the
    output matches Megatron's float32 logits and greedy tokens (check_against_megatron.py, Debian's Python);
  - Llama-style outputs load in real transformers with no missing, unexpected or mismatched keys, with Megatron's
    logits and greedy tokens (check_transformers.py, the interop base environment);
  - negative controls: q/k or gate/up swapped after loading must fail the logits check.
The environments come from ci/interop-env.sh; a missing one is a failure, never a skip."""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(SRC / "tests" / "e2e"))
from cases import CASES  # noqa: E402
from e2e_case import mpirun, run  # noqa: E402

DEBIAN_PY = "/usr/bin/python3"
FORMATS = ("torch", "torch_dist")


def interpreter(root, name):
    py = root / name / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"interop_case: {py} is missing: run ci/interop-env.sh first")
    return str(py)


def check(cmd, what, failures, timeout=300):
    start = time.time()
    p = run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in (p.stdout + p.stderr).splitlines()
             if line.startswith(("ok", "FAIL", "  ", "check_")) and "Warning" not in line]
    print("\n".join(lines) + f"\n({what}: exit {p.returncode} after {time.time() - start:.1f}s)", flush=True)
    if p.returncode != 0:
        failures.append(f"{what}: exit {p.returncode}")
        if not lines:
            print(p.stdout[-3000:] + p.stderr[-3000:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", required=True)
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True, type=pathlib.Path)
    ap.add_argument("--interop-dir", type=pathlib.Path, default=SRC / "build" / "interop")
    a = ap.parse_args()
    case = CASES[a.case]
    mcore = interpreter(a.interop_dir, f"mcore-{a.version}")
    base = interpreter(a.interop_dir, "base")
    gen = a.workdir / a.version / a.case
    shutil.rmtree(gen, ignore_errors=True)
    failures = []

    start = time.time()
    p = run([mcore, "-W", "ignore", str(HERE / "megatron_writer.py"), "--out", str(gen)] + case.writer,
            capture_output=True, text=True, timeout=600)
    print(f"(megatron-core {a.version} wrote {a.case}: exit {p.returncode} after {time.time() - start:.1f}s)")
    if p.returncode != 0:
        print(p.stdout[-5000:] + p.stderr[-10000:])
        return 1

    for fmt in FORMATS:
        e = mpirun(case.ranks, a.engine, ["--input", str(gen / fmt), "--output", str(gen / f"hf_{fmt}")], 300)
        if e.returncode != 0:
            failures.append(f"engine on {fmt}: exit {e.returncode}")
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    a_bytes = (gen / "hf_torch" / "model.safetensors").read_bytes()
    if a_bytes != (gen / "hf_torch_dist" / "model.safetensors").read_bytes():
        failures.append("the torch and torch_dist conversions differ")

    for fmt in FORMATS:
        out = str(gen / f"hf_{fmt}")
        check([DEBIAN_PY, str(HERE / "check_against_megatron.py"), "--hf", out, "--generated", str(gen),
               "--report", str(gen / f"report_{fmt}_megatron.json")], f"bit-exact + forward ({fmt})", failures)
        if case.transformers:
            check([base, "-W", "ignore", str(HERE / "check_transformers.py"), "--hf", out, "--reference",
                   str(gen / "reference"), "--report", str(gen / f"report_{fmt}_transformers.json")],
                  f"transformers ({fmt})", failures)
    if case.negative_control:
        for swap in ("qk", "gate_up"):
            tool = ([base, "-W", "ignore", str(HERE / "check_transformers.py"), "--reference", str(gen / "reference")]
                    if case.transformers else
                    [DEBIAN_PY, str(HERE / "check_against_megatron.py"), "--generated", str(gen)])
            check(tool + ["--hf", str(gen / "hf_torch"), "--swap", swap, "--expect-mismatch"],
                  f"negative control: {swap} swapped", failures)

    versions = json.loads((gen / "reference" / "megatron.json").read_text())["versions"]
    print(f"versions: {versions}")
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print(f"ok: megatron-core {a.version} {a.case}: both formats, every check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
