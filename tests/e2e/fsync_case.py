#!/usr/bin/env python3
"""Durability: traced with strace, every output file and the staging folder are fsynced before the staging folder is
renamed onto the output, and the output's parent folder after the rename; with --no-fsync nothing is fsynced. A
sharded output (several weight files) converted by 2 ranks, so that both ranks' shares are covered. The same for a
new HDF5 file: fsynced under its staging name before the rename, its folder after."""
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
sys.path.insert(0, HERE)
from e2e_case import case_setup  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
# strace -ttt -y: "1733490000.123456 fsync(5</path/to/file>) = 0", one file per traced process.
FSYNC = re.compile(r"^(\d+\.\d+) fsync\(\d+<([^>]*)>\) = 0")
RENAME = re.compile(r"^(\d+\.\d+) rename(?:at2?)?\(.*\.m2h-partial.*\) = 0")


def traced(a, ckpt, out, trace_dir, extra=("--max-shard-size", "200KB")):
    """Both ranks' fsync and rename calls as (time, call, path), in time order (strace writes one file per process)."""
    shutil.rmtree(trace_dir, ignore_errors=True)
    os.makedirs(trace_dir)
    cmd = ["mpirun", "-np", "2", "--oversubscribe", "strace", "-f", "-ff", "-ttt", "-y", "-qq",
           "-e", "trace=fsync,rename,renameat,renameat2", "-o", os.path.join(trace_dir, "t"),
           a.engine, "--input", ckpt, "--output", out, "--overwrite"]
    p = subprocess.run(cmd + list(extra), env=ENV, capture_output=True, text=True, timeout=180)
    if p.returncode:
        print(p.stdout[-2000:] + p.stderr[-2000:])
        raise SystemExit(f"FAIL: the traced conversion exited {p.returncode}")
    calls = []
    for name in os.listdir(trace_dir):
        with open(os.path.join(trace_dir, name)) as f:
            for line in f:
                if m := FSYNC.search(line):
                    calls.append((float(m.group(1)), "fsync", m.group(2)))
                elif m := RENAME.search(line):
                    calls.append((float(m.group(1)), "rename", line.strip()))
    return sorted(calls)


def check_hdf5(a, ckpt, work):
    """The HDF5 output: a new file is fsynced under its staging name before the rename, its folder after."""
    h5 = os.path.join(work, "model.h5")
    staging = os.path.join(work, ".model.h5.m2h-partial")
    calls = traced(a, ckpt, h5, os.path.join(work, "trace-hdf5"), ["--format", "hdf5"])
    renames = [i for i, c in enumerate(calls) if c[1] == "rename"]
    if len(renames) != 1:
        return [f"hdf5: expected one rename of the staging file, traced {len(renames)}"]
    before = {c[2] for c in calls[:renames[0]] if c[1] == "fsync"}
    after = {c[2] for c in calls[renames[0] + 1:] if c[1] == "fsync"}
    print(f"hdf5: fsynced before the rename: {sorted(before)}, after: {sorted(after)}")
    problems = []
    if staging not in before:
        problems.append(f"hdf5: {staging} not fsynced before the rename")
    if work not in after:
        problems.append(f"hdf5: the folder {work} not fsynced after the rename")
    os.remove(h5)
    calls = traced(a, ckpt, h5, os.path.join(work, "trace-hdf5-no-fsync"), ["--format", "hdf5", "--no-fsync"])
    if any(c[1] == "fsync" for c in calls):
        problems.append("hdf5: --no-fsync still fsynced")
    return problems


def main():
    a, work, ckpt, expected = case_setup("fsync_case", [
        "--arch", "llama", "--layers", "4", "--hidden", "128", "--heads", "4", "--kv-heads", "2", "--ffn", "256",
        "--padded-vocab", "512", "--tp", "2", "--pp", "2", "--dtype", "bf16"])
    out = os.path.join(work, "hf")
    staging = os.path.join(work, ".hf.m2h-partial")
    failures = []

    calls = traced(a, ckpt, out, os.path.join(work, "trace"))
    renames = [i for i, c in enumerate(calls) if c[1] == "rename"]
    if len(renames) != 1:
        failures.append(f"expected one rename of the staging folder, traced {len(renames)}")
    else:
        at = renames[0]
        before = {c[2] for c in calls[:at] if c[1] == "fsync"}
        after = {c[2] for c in calls[at + 1:] if c[1] == "fsync"}
        written = sorted(os.path.join(staging, n) for n in os.listdir(out))
        print(f"{len(written)} output files; fsynced before the rename: {len(before)}, after: {sorted(after)}")
        if len(written) < 4:
            failures.append(f"the output has only {len(written)} files: not the sharded case this test needs")
        missing = [p for p in written + [staging] if p not in before]
        if missing:
            failures.append(f"not fsynced before the rename: {missing}")
        if work not in after:
            failures.append(f"the parent folder {work} was not fsynced after the rename")

    calls = traced(a, ckpt, out, os.path.join(work, "trace-no-fsync"), ["--max-shard-size", "200KB", "--no-fsync"])
    synced = [c[2] for c in calls if c[1] == "fsync"]
    print(f"--no-fsync: {len(synced)} fsync calls")
    if synced:
        failures.append(f"--no-fsync still fsynced {synced[:4]}")
    if subprocess.run([PY, os.path.join(SRC, "tests/e2e/check_hf_output.py"), "--output", out, "--expected", expected,
                       "--expect-sharded"]).returncode:
        failures.append("the --no-fsync output differs from the expected tensors")
    failures += check_hdf5(a, ckpt, work)
    for f in failures:
        print("FAIL: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
