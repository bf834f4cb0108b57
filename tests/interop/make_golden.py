#!/usr/bin/python3
"""Rewrite the golden checkpoints in tests/golden/ with real megatron-core (the environments of ci/interop-env.sh).

    tests/interop/make_golden.py [NAME ...]      # default: every entry of cases.GOLDEN

Each NAME/ holds torch/ and torch_dist/ (the checkpoint in both formats), reference/ (Megatron's logits, the batch,
greedy tokens, the package versions), truth/global.safetensors (Megatron's global weights) and golden.json (what
wrote it, how many engine ranks the test uses, and this command)."""

import json
import pathlib
import shutil
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE.parent.parent
sys.path.insert(0, str(HERE))
from cases import GOLDEN  # noqa: E402


def make(name, golden, interop_dir):
    out = SRC / "tests" / "golden" / name
    shutil.rmtree(out, ignore_errors=True)
    python = interop_dir / f"mcore-{golden.version}" / "bin" / "python"
    subprocess.run([str(python), "-W", "ignore", str(HERE / "megatron_writer.py"), "--out", str(out)] + golden.writer,
                   check=True, stdout=subprocess.DEVNULL)
    versions = json.loads((out / "reference" / "megatron.json").read_text())["versions"]
    (out / "golden.json").write_text(json.dumps({
        "written_by": versions, "writer_arguments": golden.writer, "engine_ranks": golden.ranks,
        "regenerate": f"ci/interop-env.sh && tests/interop/make_golden.py {name}"}, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{name}: {size / 1024:.0f} KiB, megatron-core {versions['megatron_core']}, torch {versions['torch']}")


def main():
    names = sys.argv[1:] or sorted(GOLDEN)
    for name in names:
        if name not in GOLDEN:
            raise SystemExit(f"make_golden: unknown golden {name} (known: {', '.join(sorted(GOLDEN))})")
        make(name, GOLDEN[name], SRC / "build" / "interop")


if __name__ == "__main__":
    main()
