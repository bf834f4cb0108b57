#!/usr/bin/python3
"""One cell of the interop matrix: real megatron-core VERSION writes case NAME in both formats, the engine converts
each under mpirun, and the outputs are checked against Megatron. Or a committed golden checkpoint, checked the same
way without PyPI.

    interop_case.py --version 0.19.2 --case llama_tp2_pp2_gqa_fp32 --engine build/bin/megatron2hf --workdir DIR
    interop_case.py --golden tests/golden/NAME --ranks 3 --engine build/bin/megatron2hf --workdir DIR

Checks, each against something the engine did not produce:
  - both formats convert to byte-identical safetensors;
  - every output tensor is bit-exact against Megatron's own global weights, and the project's forward pass on the
    output matches Megatron's float32 logits and greedy tokens (check_against_megatron.py, Debian's Python);
  - Llama-style outputs (not for goldens) load in real transformers with no missing, unexpected or mismatched keys, with Megatron's
    logits and greedy tokens (check_transformers.py, the interop base environment);
  - negative controls: q/k or gate/up swapped after loading must fail the logits check;
  - goldens: the conversions are byte-identical to the ones recorded in golden.json.
The environments come from ci/interop-env.sh; a missing one is a failure, never a skip."""

import argparse
import hashlib
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


def write(mcore, case, gen, version):
    start = time.time()
    p = run([mcore, "-W", "ignore", str(HERE / "megatron_writer.py"), "--out", str(gen)] + case.writer,
            capture_output=True, text=True, timeout=600)
    print(f"(megatron-core {version} wrote it: exit {p.returncode} after {time.time() - start:.1f}s)")
    if p.returncode != 0:
        print(p.stdout[-5000:] + p.stderr[-10000:])
    return p.returncode == 0


def convert(engine, ranks, gen, out, failures):
    for fmt in FORMATS:
        e = mpirun(ranks, engine, ["--input", str(gen / fmt), "--output", str(out / f"hf_{fmt}"), "--overwrite"], 300)
        if e.returncode != 0:
            failures.append(f"engine on {fmt}: exit {e.returncode}")
    if not failures and (out / "hf_torch" / "model.safetensors").read_bytes() != \
            (out / "hf_torch_dist" / "model.safetensors").read_bytes():
        failures.append("the torch and torch_dist conversions differ")


def check_outputs(gen, out, base, negative_control, failures, project_check=True):
    """base: the interop base interpreter (transformers), or None to check with Debian's Python alone."""
    against = [DEBIAN_PY, str(HERE / "check_against_megatron.py"), "--generated", str(gen)]
    loaded = [base, "-W", "ignore", str(HERE / "check_transformers.py"), "--reference", str(gen / "reference")]
    for fmt in FORMATS:
        hf = str(out / f"hf_{fmt}")
        if project_check:
            check(against + ["--hf", hf, "--report", str(out / f"report_{fmt}_megatron.json")],
                  f"bit-exact + forward ({fmt})", failures)
        if base:
            check(loaded + ["--hf", hf, "--report", str(out / f"report_{fmt}_transformers.json")],
                  f"transformers ({fmt})", failures)
    if negative_control:
        for swap in ("qk", "gate_up"):
            check((loaded if base else against) + ["--hf", str(out / "hf_torch"), "--swap", swap, "--expect-mismatch"],
                  f"negative control: {swap} swapped", failures)


def same_bytes_as_recorded(gen, out, failures):
    """The conversions must be byte-identical to those recorded in golden.json (make_golden.py --record-outputs)."""
    recorded = json.loads((gen / "golden.json").read_text()).get("converted_sha256")
    if not recorded:
        failures.append("golden.json records no converted_sha256")
        return
    for fmt, files in recorded.items():
        for name, digest in files.items():
            got = hashlib.sha256((out / f"hf_{fmt}" / name).read_bytes()).hexdigest()
            if got != digest:
                failures.append(f"hf_{fmt}/{name} differs from the recorded conversion ({got[:12]} != {digest[:12]})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", help="megatron-core version that writes the checkpoint (with --case)")
    ap.add_argument("--case", choices=sorted(CASES))
    ap.add_argument("--golden", type=pathlib.Path, help="a committed golden folder instead: checked without PyPI")
    ap.add_argument("--ranks", type=int, default=2, help="engine ranks for --golden")
    ap.add_argument("--negative-control", action="store_true", help="with --golden: also the swapped mappings")
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True, type=pathlib.Path)
    ap.add_argument("--interop-dir", type=pathlib.Path, default=SRC / "build" / "interop")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    a = ap.parse_args()
    if a.list:  # the cases megatron-core --version can write
        print("\n".join(name for name, case in sorted(CASES.items()) if not case.releases or a.version in case.releases))
        return 0
    failures = []
    if a.golden:
        gen, out = a.golden, a.workdir / "golden" / a.golden.name
        shutil.rmtree(out, ignore_errors=True)
        convert(a.engine, a.ranks, gen, out, failures)
        if not failures:
            check_outputs(gen, out, None, a.negative_control, failures)
            same_bytes_as_recorded(gen, out, failures)
        label = f"golden {a.golden.name}"
    else:
        case = CASES[a.case]
        mcore = interpreter(a.interop_dir, f"mcore-{a.version}")
        base = interpreter(a.interop_dir, "base") if case.transformers else None
        gen = out = a.workdir / a.version / a.case
        shutil.rmtree(gen, ignore_errors=True)
        if not write(mcore, case, gen, a.version):
            return 1
        convert(a.engine, case.ranks, gen, out, failures)
        if not failures:
            check_outputs(gen, out, base, case.negative_control, failures, case.project_check)
        label = f"megatron-core {a.version} {a.case}"
    versions = json.loads((gen / "reference" / "megatron.json").read_text())["versions"]
    print(f"written by: {versions}")
    if failures:
        print(f"FAIL: {label}: " + "; ".join(failures))
        return 1
    print(f"ok: {label}: both formats, every check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
