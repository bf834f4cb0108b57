#!/usr/bin/env python3
"""A save in progress is not a damaged checkpoint: real megatron-core files (a committed golden) cut where a save
can be when the engine looks (a rank file not written yet, a rank file cut at 1 %, 50 % and one byte short, a
torch_dist folder without PyTorch DCP's `.metadata` or without Megatron's metadata.json), with the tracker file still
naming the previous save. The engine must exit non-zero with one line saying "save in progress" and naming the
iteration folder; once the save is complete (or the tracker names it) the same folder converts."""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
GOLDEN = os.path.join(SRC, "tests", "golden", "mcore-0.19.2_llama_tp2_pp2_distopt_bf16")


def convert(a, root):
    out = os.path.join(os.path.dirname(root), "hf")
    p = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", a.engine, "--input", root, "--iteration", "100",
                        "--output", out, "--overwrite"], env=ENV, capture_output=True, text=True, timeout=120)
    errors = [line for line in p.stderr.splitlines() if line.startswith("megatron2hf: error:")]
    return p.returncode, errors


def fresh(work, fmt):
    root = os.path.join(work, fmt)
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(os.path.join(GOLDEN, fmt), root)
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("50")  # Megatron updates the tracker only when the save has finished
    return root, os.path.join(root, "iter_0000100")


def cut(path, keep):
    with open(path, "r+b") as f:
        f.truncate(keep)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    work = os.path.join(a.workdir, "save_in_progress_case")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rank_file = os.path.join("mp_rank_01_001", "model_optim_rng.pt")
    size = os.path.getsize(os.path.join(GOLDEN, "torch", "iter_0000100", rank_file))
    points = [("rank file not written yet", "torch", lambda it: os.remove(os.path.join(it, rank_file)))]
    for what, keep in [("1 %", size // 100), ("50 %", size // 2), ("one byte short", size - 1)]:
        points.append((f"rank file cut at {what}", "torch", lambda it, k=keep: cut(os.path.join(it, rank_file), k)))
    points += [("no .metadata yet", "torch_dist", lambda it: os.remove(os.path.join(it, ".metadata"))),
               ("no metadata.json yet", "torch_dist", lambda it: os.remove(os.path.join(it, "metadata.json")))]
    failures = []
    for what, fmt, damage in points:
        root, it = fresh(work, fmt)
        damage(it)
        rc, errors = convert(a, root)
        print(f"{fmt}, {what}: exit {rc}: {errors}")
        if rc == 0 or len(errors) != 1 or "save in progress" not in errors[0] or "iter_0000100" not in errors[0]:
            failures.append(f"{fmt}, {what}: expected one 'save in progress' error naming iter_0000100")
    for fmt in ("torch", "torch_dist"):
        root, _ = fresh(work, fmt)
        rc, errors = convert(a, root)
        print(f"{fmt}, complete save, tracker not yet updated: exit {rc} {errors}")
        if rc:
            failures.append(f"{fmt}: the complete save did not convert")
    # A rank file cut short while the tracker already names the iteration is damage, reported as such.
    root, it = fresh(work, "torch")
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("100")
    cut(os.path.join(it, rank_file), size // 2)
    rc, errors = convert(a, root)
    print(f"torch, cut with the tracker at 100: exit {rc}: {errors}")
    if rc == 0 or not errors or "save in progress" in errors[0] or "model_optim_rng.pt" not in errors[0]:
        failures.append("a damaged rank file of a finished save was not reported as damage")
    for f in failures:
        print("FAIL: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
