#!/usr/bin/python3
"""A whole training run at disk speed: K iterations of one generated checkpoint (hard links of one iteration, so
the page cache holds them as it holds one) converted in one engine run, against K times the read+write floor of
one iteration, measured in one session; the same through the launcher's local executor, K iterations in one task
against one task per iteration; K iterations into one HDF5 file with zstd; and each rank's peak RSS against
--memory-budget + 256 MiB.

    /usr/bin/python3 bench/whole_run.py --engine build-bench/bin/megatron2hf --launcher build-bench/bin/megatron2hf-launch

(ci/bench.sh --whole-run). Outputs need K x the checkpoint's size of free disk; they are removed after each run.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gen_checkpoint  # noqa: E402
from bench import Runner, free_bytes, parse_size, wait_writeback  # noqa: E402

def log(msg):
    print(f"[whole-run {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_run(ck, meta, k):
    """A checkpoint root with K iterations (100, 200, ...), each a hard-linked copy of the generated one."""
    first_file = sorted(meta["formats"]["torch"]["files"])[0]  # iter_NNNNNNN/mp_rank_.../model_optim_rng.pt
    src = os.path.join(ck, "checkpoint", first_file.split("/")[0])
    run = os.path.join(os.path.dirname(ck), f"run-{os.path.basename(ck)}-{k}")
    if not os.path.exists(os.path.join(run, "latest_checkpointed_iteration.txt")):
        shutil.rmtree(run, ignore_errors=True)
        os.makedirs(run)
        for i in range(1, k + 1):
            subprocess.run(["cp", "-al", src, os.path.join(run, f"iter_{100 * i:07d}")], check=True)
        with open(os.path.join(run, "latest_checkpointed_iteration.txt"), "w") as f:
            f.write(str(100 * k))
    return run, src


def floor(folders, scratch, runs):
    """Median seconds of `cat` and of `cp` of these folders' files (page cache warm), each file to its own name."""
    files = sorted(os.path.join(d, f) for src in folders for d, _, fs in os.walk(src) for f in fs)
    subprocess.run("cat " + " ".join(map(shlex.quote, files)) + " > /dev/null", shell=True, check=True)
    out = {}
    for tool in ("cat", "cp"):
        times = []
        for _ in range(runs):
            shutil.rmtree(scratch, ignore_errors=True)
            os.makedirs(scratch)
            wait_writeback()
            t0 = time.monotonic()
            for i, f in enumerate(files):
                cmd = ["cat", f] if tool == "cat" else ["cp", "--reflink=never", f, os.path.join(scratch, str(i))]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times.append(time.monotonic() - t0)
        out[tool] = statistics.median(times)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def timed(runner, argv, stats, parallel=None):
    wait_writeback()
    return runner.run(argv, stats, parallel=parallel, keep_log=True)


PREPARED = re.compile(r"\] done: .*, ([0-9.]+) ms before the first byte moved( \(plan reused\))?")


def prepared(log_text):
    """Each iteration's milliseconds before its first byte moved (indexing not done ahead, planning), and how
    many iterations ran on a reused plan."""
    found = PREPARED.findall(log_text)
    return [float(ms) for ms, _ in found], sum(1 for _, reused in found if reused)


def launcher_log(path, run_root, k):
    """The save lines a training log has: all the launcher needs to find the run's checkpoints."""
    with open(path, "w") as f:
        for i in range(1, k + 1):
            f.write(f"saving checkpoint at iteration {100 * i:7d} to {run_root} in torch format\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--launcher", required=True)
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--size", type=float, default=0.5, help="GB of the generated checkpoint (legacy format)")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--ranks", type=int, default=2, help="engine ranks per node")
    ap.add_argument("--nodes", type=int, default=1, help="with --launch srun (sbatch/bench.sbatch --whole-run)")
    ap.add_argument("--launch", choices=["mpirun", "srun"], default="mpirun")
    ap.add_argument("--srun-args", default="--mpi=pmix")
    ap.add_argument("--memory-budget", default="1GiB")
    ap.add_argument("--runs", type=int, default=3, help="runs of the floor of one iteration")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each whole-run row; the last one counts")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    a.engine, a.launcher = os.path.abspath(a.engine), os.path.abspath(a.launcher)
    runner = Runner(argparse.Namespace(work=a.work, launcher=a.launch, mpirun_args="", srun_args=a.srun_args))
    k, r = a.iterations, a.ranks

    ck, meta = gen_checkpoint.generated(a.work, a.size, "torch", log=log)
    m = meta["model_bytes"]
    need = k * m * 1.1
    if free_bytes(a.work) < need:
        raise SystemExit(f"whole_run: {k} iterations of {m / 1e9:.2f} GB need {need / 1e9:.0f} GB free in {a.work}")
    run_root, one = make_run(ck, meta, k)
    out = os.path.join(a.work, "out-whole-run")
    stats = os.path.join(a.work, "stats", "whole-run")
    fl = floor([one], out, a.runs)
    # The same bytes as the whole run in one go: what this disk sustains once the page cache's dirty limit binds.
    fl_all = floor(sorted(os.path.join(run_root, d) for d in os.listdir(run_root) if d.startswith("iter_")), out, 1)
    log(f"{k} x {m / 1e9:.2f} GB, {r} ranks; floor of one iteration: cat {fl['cat']:.2f} s, cp {fl['cp']:.2f} s; "
        f"of all: cp {fl_all['cp']:.2f} s")
    rows = {}

    def measured(argv, parallel=None):
        """The last of a.repeat runs: the first ones let the VM hand the page cache its memory (docs/performance.md)."""
        for _ in range(a.repeat):
            shutil.rmtree(out, ignore_errors=True)
            if os.path.exists(out + ".h5"):
                os.remove(out + ".h5")
            rec = timed(runner, argv, stats, parallel=parallel)
        return rec

    def engine_run(name, *extra):
        rec = measured([a.engine, "--input", run_root, "--iteration", "all", "--memory-budget", a.memory_budget, *extra],
                       parallel=(a.nodes, r))
        rows[name] = rec
        rec["prepared_ms"], rec["plans_reused"] = prepared(rec.pop("log"))
        log(f"{name}: {rec['wall_s']:.2f} s, peak RSS {rec['maxrss_kib'] / 1024:.0f} MiB")
        return rec

    engine_run("engine, one run", "--output", out, "--no-fsync")
    engine_run("engine, one run, fsync", "--output", out)
    h5 = engine_run("engine, one run, HDF5 zstd", "--output", out + ".h5", "--format", "hdf5", "--compress", "zstd")
    stored = os.path.getsize(out + ".h5")  # every iteration's group, compressed
    os.remove(out + ".h5")

    logs = os.path.join(a.work, "whole-run-logs")
    shutil.rmtree(logs, ignore_errors=True)
    os.makedirs(logs)
    launcher_log(os.path.join(logs, "run_1.out"), run_root, k)
    for per_task in (k, 1):
        convert_logs = os.path.join(a.work, f"whole-run-convert-{per_task}")
        shutil.rmtree(convert_logs, ignore_errors=True)  # the launcher would otherwise find its outputs converted
        rec = measured(["/bin/sh", "-c", f"rm -rf {shlex.quote(convert_logs)} && exec " + shlex.join([
            a.launcher, "--executor", "local", "--convert_logs_dir", convert_logs, "--train_logs_dir_or_path", logs,
            "--save_checkpoints_dir", out, "--ntasks-per-node", str(r), "--memory-budget", a.memory_budget,
            "--iterations-per-task", str(per_task), "--engine-arg=--no-fsync"])])
        rows[f"launcher, {per_task} per task"] = rec
        log(f"launcher, {per_task} iteration(s) per task: {rec['wall_s']:.2f} s")
    shutil.rmtree(out, ignore_errors=True)

    limit_mib = (parse_size(a.memory_budget) >> 20) + 256
    floor_k = k * fl["cp"]
    print(f"{k} iterations of {m / 1e9:.2f} GB (legacy, generated), {r} ranks, --memory-budget {a.memory_budget}; "
          f"floor: one iteration cat {fl['cat']:.2f} s, cp {fl['cp']:.2f} s; all {k} in one go, cp {fl_all['cp']:.2f} s\n")
    print(f"| run | wall s | s per iteration | against {k} x cp of one iteration | against cp of all {k} | peak RSS "
          f"per rank (limit) |\n|---|---|---|---|---|---|")
    for name, rec in rows.items():
        # procstat sees the engine's ranks when they are what it started; under the launcher, only the launcher.
        rss = f"{rec['maxrss_kib'] / 1024:.0f} MiB ({limit_mib} MiB)" if name.startswith("engine") else "–"
        print(f"| {name} | {rec['wall_s']:.2f} | {rec['wall_s'] / k:.3f} | {rec['wall_s'] / floor_k:.2f}x | "
              f"{rec['wall_s'] / fl_all['cp']:.2f}x | {rss} |")
    for name, rec in rows.items():
        ms = rec.get("prepared_ms")
        if ms:
            print(f"\n{name}: before the first byte moved, the first iteration {ms[0]:.1f} ms, each later one "
                  f"{statistics.median(ms[1:] or ms):.1f} ms (median; {rec['plans_reused']} of {len(ms)} on a reused plan)")
    batched, single = rows[f"launcher, {k} per task"]["wall_s"], rows["launcher, 1 per task"]["wall_s"]
    print(f"\nlauncher (local executor): {k} iterations in one task against one task per iteration: "
          f"{batched / single:.2f}x ({batched:.1f} s against {single:.1f} s)")
    print(f"HDF5 with zstd: {k * m / h5['wall_s'] / 1e9:.2f} GB/s, compression ratio {k * m / max(1, stored):.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(iterations=k, model_bytes=m, ranks=r, floor=fl, floor_all=fl_all, stored=stored,
                           rows={n: {x: v for x, v in rec.items() if x not in ("ranks", "log")} for n, rec in rows.items()}), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
