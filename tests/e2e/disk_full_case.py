#!/usr/bin/env python3
"""Fail fast on space: converting into a 1 MiB tmpfs (and into one with too few inodes), as safetensors or as a new
HDF5 file, must fail in the first second with one line naming the output folder and the shortfall, on every rank,
leaving nothing behind."""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from e2e_case import case_setup  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def convert_into(a, ckpt, mount, options, expect, output="hf", extra=()):
    os.makedirs(mount, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", mount], check=True)
    try:
        out = os.path.join(mount, output)
        start = time.time()
        p = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", a.engine, "--input", ckpt, "--output", out, *extra],
                           env=ENV, capture_output=True, text=True, timeout=120)
        took = time.time() - start
        errors = [line for line in p.stderr.splitlines() if "error:" in line]
        left = os.listdir(mount)
        print(f"tmpfs {options}: exit {p.returncode} after {took:.1f}s; {errors[:1]}; left in the mount: {left}")
        problems = []
        if p.returncode == 0:
            problems.append("the conversion succeeded")
        if not any(expect in e and mount in e for e in errors):
            problems.append(f"no error line naming {mount} and '{expect}'")
        if left:
            problems.append(f"left behind: {left}")
        return problems
    finally:
        subprocess.run(["umount", mount], check=False)


def main():
    a, work, ckpt, expected = case_setup("disk_full_case", [
        "--arch", "llama", "--layers", "4", "--hidden", "256", "--heads", "4", "--kv-heads", "2", "--ffn", "512",
        "--padded-vocab", "1024", "--tp", "2", "--pp", "2", "--dtype", "fp32"])
    problems = convert_into(a, ckpt, os.path.join(work, "small"), "size=1m", "not enough free space")
    # Room for the bytes but not for the files: the staging folder and the output files each take an inode.
    problems += convert_into(a, ckpt, os.path.join(work, "few_inodes"), "size=64m,nr_inodes=3", "not enough free inodes")
    # The HDF5 output: a new .h5 file that cannot hold the datasets.
    problems += convert_into(a, ckpt, os.path.join(work, "small_h5"), "size=1m", "not enough free space", "model.h5",
                             ["--format", "hdf5"])
    for p in problems:
        print("FAIL: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
