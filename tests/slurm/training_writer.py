#!/usr/bin/python3
"""A stand-in for a Megatron-LM training job, for watch mode's tests: prints a training log (to stdout, which
SLURM writes to the job's .out), then saves the iterations of a fixture checkpoint into its checkpoint folder one
after another, in the order Megatron writes them and slowly enough to be seen half-written:

  torch (legacy):  every rank's mp_rank_*/model_optim_rng.pt at once, in two halves; then the tracker file.
  torch_dist:      common.pt, every rank's __*.distcp at once in two halves, .metadata (DCP's coordinator,
                   last of the sharded save), metadata.json; then the tracker file.

    training_writer.py --log-text FILE --source CKPT --dest ROOT --format torch|torch_dist
                       --iterations 100,200 [--pause S] [--end-line]
"""
import argparse
import os
import sys
import time


def say(line):
    print(line, flush=True)


def save_in_halves(pairs, pause):
    """pairs: (source file, destination file). All are created and half written, then finished together."""
    handles = []
    for src, dst in pairs:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(src, "rb") as f:
            data = f.read()
        out = open(dst, "wb")
        out.write(data[: len(data) // 2])
        out.flush()
        handles.append((out, data))
    time.sleep(pause)
    for out, data in handles:
        out.write(data[len(data) // 2:])
        out.close()


def save_iteration(a, it):
    name = f"iter_{it:07d}"
    src, dst = os.path.join(a.source, name), os.path.join(a.dest, name)
    say(f"[node0042:0]: saving checkpoint at iteration {it:7d} to {a.dest} in {a.format} format")
    if a.format == "torch":
        ranks = sorted(d for d in os.listdir(src) if d.startswith("mp_rank_"))
        save_in_halves([(os.path.join(src, r, "model_optim_rng.pt"), os.path.join(dst, r, "model_optim_rng.pt"))
                        for r in ranks], a.pause)
    else:
        save_in_halves([(os.path.join(src, "common.pt"), os.path.join(dst, "common.pt"))], 0)
        shards = sorted(f for f in os.listdir(src) if f.endswith(".distcp"))
        save_in_halves([(os.path.join(src, f), os.path.join(dst, f)) for f in shards], a.pause)
        time.sleep(a.pause)
        for last in (".metadata", "metadata.json"):
            save_in_halves([(os.path.join(src, last), os.path.join(dst, last))], 0)
    with open(os.path.join(a.dest, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(it))
    say(f"[node0042:0]:   successfully saved checkpoint from iteration {it:7d} to {a.dest}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log-text", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--dest", required=True)
    ap.add_argument("--format", choices=["torch", "torch_dist"], required=True)
    ap.add_argument("--iterations", required=True)
    ap.add_argument("--pause", type=float, default=2.0)
    ap.add_argument("--end-line", action="store_true")
    a = ap.parse_args()
    with open(a.log_text) as f:
        sys.stdout.write(f.read())
    sys.stdout.flush()
    for it in (int(x) for x in a.iterations.split(",")):
        time.sleep(a.pause)
        save_iteration(a, it)
    if a.end_line:
        say("[node0042:0]: [after training is done] datetime: 2025-03-31 06:00:00 ")
    time.sleep(a.pause)  # the final evaluation


if __name__ == "__main__":
    main()
