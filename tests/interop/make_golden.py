#!/usr/bin/python3
"""Rewrite the golden checkpoints in tests/golden/ with real megatron-core (the environments of ci/interop-env.sh).

    tests/interop/make_golden.py [NAME ...]      # default: every entry of cases.GOLDEN
    tests/interop/make_golden.py --record-outputs build/bin/megatron2hf [NAME ...]
                                                 # record the checksums of the engine's conversions

Each NAME/ holds torch/ and torch_dist/ (the checkpoint in both formats), reference/ (Megatron's logits, the batch,
greedy tokens, the package versions), truth/global.safetensors (Megatron's global weights) and golden.json (what
wrote it, how many engine ranks the test uses, this command, and the checksums of the engine's conversions, which
the golden test compares so that a change to the engine that alters an output byte shows)."""

import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

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
        "regenerate": f"ci/interop-env.sh && tests/interop/make_golden.py {name} && "
                      f"tests/interop/make_golden.py --record-outputs build/bin/megatron2hf {name}"},
        indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{name}: {size / 1024:.0f} KiB, megatron-core {versions['megatron_core']}, torch {versions['torch']}")


def record_outputs(name, engine):
    """The checksums of the engine's conversions, which later engines must reproduce byte for byte."""
    sys.path.insert(0, str(SRC / "tests" / "e2e"))
    from e2e_case import mpirun
    out = SRC / "tests" / "golden" / name
    meta = json.loads((out / "golden.json").read_text())
    converted = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("torch", "torch_dist"):
            hf = pathlib.Path(tmp) / fmt
            if mpirun(meta["engine_ranks"], engine, ["--input", str(out / fmt), "--output", str(hf)], 300).returncode:
                raise SystemExit(f"make_golden: the engine failed on {out / fmt}")
            converted[fmt] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                              for f in sorted(hf.iterdir()) if f.suffix in (".safetensors", ".json")
                              and f.name != "megatron2hf.manifest.json"}
    meta["converted_sha256"] = converted
    (out / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")


def main():
    args = sys.argv[1:]
    engine = None
    if args[:1] == ["--record-outputs"]:
        engine, args = args[1], args[2:]
    for name in args or sorted(GOLDEN):
        if name not in GOLDEN:
            raise SystemExit(f"make_golden: unknown golden {name} (known: {', '.join(sorted(GOLDEN))})")
        if engine:
            record_outputs(name, engine)
        else:
            make(name, GOLDEN[name], SRC / "build" / "interop")


if __name__ == "__main__":
    main()
