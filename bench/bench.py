#!/usr/bin/python3
"""megatron2hf benchmark: the engine against the plain-tools floor and the Python baseline.

For each size (GB of model weights) and format it generates a synthetic checkpoint (bench/gen_checkpoint.py:
fp32 weights, TP 2 x PP 2, 3x fp32 optimizer state alongside, as sparse zeros unless --dense-optimizer), then measures, each `--runs` times (median):

  floor    plain tools on the same files: `cat` of the model bytes into /dev/null (read) and `cp` of them
           (read + write of the model bytes: THE floor the engine is compared with). torch_dist data files hold
           optimizer items too; the generator puts each file's model items first and the floor uses
           `dd count=<model prefix>` instead of cat/cp there.
  engine   megatron2hf with 1, 2, 4 ranks (`--ranks`), `--dtype source` and a cast to bf16 (`--dtypes`), every rank
           run under bench/procstat (peak RSS, /proc/PID/io).
  python   bench/python_baseline.py: torch.load every rank file, reassemble in torch, write safetensors.

and prints one table: size, format, tool, ranks, dtype, seconds (median wall clock of the whole command,
mpirun start-up included), GB/s (model bytes / seconds), ratio to the floor (seconds / floor seconds), speed-up
over the Python baseline (baseline seconds / seconds, same dtype), peak RSS of the largest rank, bytes read per
model byte (rchar: every byte returned by read()/pread(), page cache or not, all ranks) and bytes the block
layer read from disk per model byte (read_bytes; ~0 when the checkpoint is in the page cache).

Every engine output is compared byte for byte (`cmp`) with the Python baseline's output of the same dtype.
Outputs are deleted after each run and the next run waits until the kernel's dirty pages are written back
(bounded), so runs do not pay for each other's write-back. Generated data lives under --work and is removed at
the end unless --keep.

With --input PATH (a user's checkpoint root) nothing is generated: the floor reads/copies the whole rank files
(model_optim_rng.pt or *.distcp), whatever else they hold, and the table says how many bytes that was.
With --layouts NODESxRANKS,... and --launcher srun (sbatch/bench.sbatch) the engine runs across nodes and the
table gains a scaling column (seconds of the first layout / seconds).
"""

import argparse
import datetime
import glob
import json
import os
import platform
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

GB = 1e9
MIB = 1 << 20


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_size(text):
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text}")
    unit = (m.group(2) or "B").upper()
    mult = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30,
            "TIB": 1 << 40}[unit]
    return int(float(m.group(1)) * mult)


# --------------------------------------------------------------------------------------------------------------
# machine and page-cache state
# --------------------------------------------------------------------------------------------------------------

def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def wait_writeback(limit=256 * MIB, timeout=120.0):
    """Wait (bounded) until dirty + write-back pages are below `limit`, so a run starts with an idle disk."""
    t0 = time.monotonic()
    while meminfo("Dirty") + meminfo("Writeback") > limit and time.monotonic() - t0 < timeout:
        time.sleep(0.25)
    return time.monotonic() - t0


def machine_description(work):
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            return ""

    lscpu = sh("lscpu")
    field = lambda name: next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith(name + ":")), "?")
    fs = sh(f"findmnt -n -o SOURCE,FSTYPE -T {shlex.quote(work)}")
    dev = fs.split()[0] if fs else ""
    rot = sh(f"cat /sys/block/{os.path.basename(dev)}/queue/rotational 2>/dev/null") if dev.startswith("/dev/") else ""
    return {
        "host": platform.node(),
        "cpu": f"{field('Model name')}, {field('CPU(s)')} CPU(s), {field('Thread(s) per core')} thread(s)/core, "
               f"L3 {field('L3 cache')}, hypervisor {field('Hypervisor vendor')}",
        "memory_gib": round(meminfo("MemTotal") / (1 << 30), 1),
        "kernel": platform.release(),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "filesystem": f"{fs} (rotational={rot or '?'})",
        "mpirun": sh("mpirun --version 2>&1 | head -n1"),
        "torch": sh("/usr/bin/python3 -c 'import torch; print(torch.__version__)'"),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------------------------
# running things
# --------------------------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, a):
        self.a = a
        self.procstat = os.path.join(a.work, "procstat")
        src = os.path.join(HERE, "procstat.c")
        if not os.path.exists(self.procstat) or os.path.getmtime(self.procstat) < os.path.getmtime(src):
            subprocess.run(["cc", "-O2", "-o", self.procstat, src], check=True)
        self.env = dict(os.environ)
        if os.geteuid() == 0:
            self.env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        if a.launcher == "mpirun":
            # mpirun runs the ranks on this machine: Open MPI's shared-memory transport is all they need, and
            # probing the network ones (UCX, OFI) adds about 0.2 s to every run (docs/performance.md).
            self.env.setdefault("OMPI_MCA_pml", "ob1")
            self.env.setdefault("OMPI_MCA_btl", "self,vader")

    def run(self, argv, stats_dir, parallel=None, shell=False, stdout=None, keep_log=False):
        """Run argv under procstat (each rank when `parallel` = (nodes, ranks per node)); returns a record (with
        the whole of stderr as "log" when `keep_log`)."""
        shutil.rmtree(stats_dir, ignore_errors=True)
        os.makedirs(stats_dir)
        wrapped = [self.procstat, os.path.join(stats_dir, "rank.%r.json"), "--"]
        wrapped += ["/bin/sh", "-c", argv] if shell else argv
        if parallel:
            nodes, per_node = parallel
            n = nodes * per_node
            if self.a.launcher == "srun":
                launch = ["srun", f"--nodes={nodes}", f"--ntasks={n}", f"--ntasks-per-node={per_node}",
                          "--kill-on-bad-exit=1"] + shlex.split(self.a.srun_args)
            else:
                launch = ["mpirun", "-np", str(n)] + (["--oversubscribe"] if n > (os.cpu_count() or 1) else [])
                launch += shlex.split(self.a.mpirun_args)
            wrapped = launch + wrapped
        t0 = time.monotonic()
        p = subprocess.run(wrapped, env=self.env, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        wall = time.monotonic() - t0
        ranks = []
        for f in sorted(glob.glob(os.path.join(stats_dir, "rank.*.json"))):
            with open(f) as fh:
                ranks.append(json.load(fh))
        rec = {"wall_s": wall, "rc": p.returncode, "ranks": ranks,
               "maxrss_kib": max((r["maxrss_kib"] for r in ranks), default=0),
               "rchar": sum(r["rchar"] for r in ranks), "read_bytes": sum(r["read_bytes"] for r in ranks),
               "write_bytes": sum(r["write_bytes"] for r in ranks),
               "cpu_s": sum(r["user_s"] + r["sys_s"] for r in ranks), "stderr": (p.stderr or "")[-4000:],
               "stdout": (p.stdout or "")[-4000:] if stdout is None else ""}
        if keep_log:
            rec["log"] = p.stderr or ""
        if p.returncode != 0:
            raise RuntimeError(f"command failed ({p.returncode}): {' '.join(map(str, wrapped))}\n{rec['stderr']}")
        return rec


def median_of(records, key="wall_s"):
    return statistics.median(r[key] for r in records)


def summarize(records):
    """Median wall; the other figures from the median run."""
    ordered = sorted(records, key=lambda r: r["wall_s"])
    mid = ordered[len(ordered) // 2]
    out = {k: mid[k] for k in ("maxrss_kib", "rchar", "read_bytes", "write_bytes")}
    out.update(seconds=median_of(records), cpu_s=median_of(records, "cpu_s"), runs=[round(r["wall_s"], 3) for r in records],
               min_s=ordered[0]["wall_s"], max_s=ordered[-1]["wall_s"],
               load=[r.get("load") for r in records])
    if "engine_s" in mid:
        out["engine_s"] = statistics.median(r["engine_s"] for r in records)
    return out


ENGINE_RANKS = re.compile(r"format\), (\d+) rank\(s\)")
ENGINE_DONE = re.compile(r"done: (\d+) tensors, (\d+) bytes written, (\d+) bytes read from disk for (\d+) model "
                         r"bytes \(([0-9.]+)x\), ([0-9.]+) s")


# --------------------------------------------------------------------------------------------------------------
# one checkpoint (a size and a format)
# --------------------------------------------------------------------------------------------------------------

class Case:
    def __init__(self, a, runner, size_gb, fmt, ckpt_root, model_bytes, floor_files, label):
        self.a, self.r = a, runner
        self.size_gb, self.fmt, self.root, self.model_bytes = size_gb, fmt, ckpt_root, model_bytes
        self.floor_files = floor_files  # [(path, bytes to read)]
        self.label = label
        self.scratch = os.path.join(a.work, "out")
        self.protect = set()
        self.rows = []
        self.floor_bytes = sum(os.path.getsize(p) if n is None else n for p, n in floor_files)

    def output(self, name):
        return os.path.join(self.scratch, name)

    def clean(self):
        """Remove every output of earlier runs except the baseline's reference outputs."""
        os.makedirs(self.scratch, exist_ok=True)
        for n in os.listdir(self.scratch):
            if n not in self.protect:
                path = os.path.join(self.scratch, n)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)

    def before_run(self):
        """Every timed run starts from the same state: earlier outputs deleted, dirty pages written back, the page
        cache holding the checkpoint (unless --drop-caches), and memory in the --memory-state policy."""
        self.clean()
        if self.a.drop_caches:
            subprocess.run(["sync"])
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1\n")
        waited = wait_writeback()
        if waited > 1:
            log(f"  waited {waited:.1f} s for write-back")
        if self.a.memory_state == "settled":
            time.sleep(6)  # memory freed by earlier runs has gone back to the hypervisor (see docs/performance.md)
        else:
            # recycled: write and delete a scratch file as large as a run's output plus its buffers just before
            # the run, so that the run gets pages the guest has just freed rather than never-touched host memory
            n = (self.model_bytes or self.floor_bytes) + 4 * parse_size(self.a.memory_budget)
            path = os.path.join(self.scratch, ".recycle")
            subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={n // MIB + 1}", "status=none"],
                           check=True)
            os.unlink(path)
        return loadavg()

    def repeat(self, n, fn):
        out = []
        for _ in range(n):
            load = self.before_run()
            rec = fn()
            rec["load"] = round(load, 2)
            out.append(rec)
        return out

    # floor ------------------------------------------------------------------------------------------------
    def floor(self):
        whole = all(n is None for _, n in self.floor_files)
        paths = [p for p, _ in self.floor_files]
        dst = os.path.join(self.scratch, "floor")
        if whole:
            read_cmd = "cat " + " ".join(map(shlex.quote, paths)) + " > /dev/null"
            copy_cmd = (f"mkdir -p {shlex.quote(dst)} && " + " ".join(
                f"cp --reflink=never {shlex.quote(p)} {shlex.quote(os.path.join(dst, f'{k}.bin'))} &&"
                for k, p in enumerate(paths)) + " true")
            tools = ("cat", "cp")
        else:
            read_cmd = "; ".join(f"dd if={shlex.quote(p)} bs=4M count={n} iflag=count_bytes status=none > /dev/null"
                                 for p, n in self.floor_files)
            copy_cmd = f"mkdir -p {shlex.quote(dst)}; " + "; ".join(
                f"dd if={shlex.quote(p)} of={shlex.quote(os.path.join(dst, f'{k}.bin'))} bs=4M count={n} "
                f"iflag=count_bytes status=none" for k, (p, n) in enumerate(self.floor_files))
            tools = ("dd (read)", "dd (copy)")
        floor_bytes = self.floor_bytes
        # warm the page cache with the model bytes (untimed), as "a checkpoint in the page cache"
        if not self.a.drop_caches:
            self.r.run(read_cmd, os.path.join(self.a.work, "stats", "warm"), shell=True)

        def one(cmd):
            def go():
                return self.r.run(cmd, os.path.join(self.a.work, "stats", "floor"), shell=True)
            return go

        reads = self.repeat(self.a.runs, one(read_cmd))
        copies = self.repeat(self.a.runs, one(copy_cmd))
        self.floor_read = summarize(reads)
        self.floor_copy = summarize(copies)
        self.floor_bytes = floor_bytes
        for tool, s in zip(tools, (self.floor_read, self.floor_copy)):
            self.rows.append(dict(kind="floor", tool=tool, ranks="", dtype="", floor_bytes=floor_bytes, **s))

    # baseline ---------------------------------------------------------------------------------------------
    def baseline(self, dtype):
        out = self.output(f"python-{dtype}")
        cmd = [sys.executable, os.path.join(HERE, "python_baseline.py"), "--input", self.root, "--output", out,
               "--dtype", dtype]

        def go():
            return self.r.run(cmd, os.path.join(self.a.work, "stats", "python"))

        recs = self.repeat(self.a.baseline_runs, go)
        self.protect.add(f"python-{dtype}")  # the reference for the engine's outputs
        s = summarize(recs)
        self.rows.append(dict(kind="python", tool="python (torch.load)", ranks=1, dtype=dtype, **s))
        return out

    # engine -----------------------------------------------------------------------------------------------
    def engine(self, layout, dtype, reference):
        nodes, per_node = layout
        name = f"engine-{nodes}x{per_node}-{dtype}"
        cmd = [self.a.engine, "--input", self.root, "--overwrite", "--memory-budget", self.a.memory_budget]
        if dtype != "source":
            cmd += ["--dtype", dtype]
        cmd += shlex.split(self.a.engine_args)

        def go():
            out = self.output(name)
            rec = self.r.run(cmd + ["--output", out], os.path.join(self.a.work, "stats", "engine"),
                             parallel=layout)
            text = rec["stderr"] + rec["stdout"]
            n = ENGINE_RANKS.search(text)
            if not n or int(n.group(1)) != nodes * per_node:
                raise RuntimeError(f"the engine did not run as one job of {nodes * per_node} ranks (its log says "
                                   f"{n.group(0) if n else 'nothing'}); check the launcher (--srun-args --mpi=...)")
            m = ENGINE_DONE.search(text)
            if m:
                rec["engine_s"] = float(m.group(6))
                rec["engine_bytes_read"] = int(m.group(3))
                rec["engine_model_bytes"] = int(m.group(4))
            return rec

        recs = self.repeat(self.a.runs, go)
        s = summarize(recs)
        last = recs[-1]
        if self.model_bytes is None and "engine_model_bytes" in last:
            self.model_bytes = last["engine_model_bytes"]
        verified = ""
        if reference:
            out = os.path.join(self.scratch, name)
            verified = "cmp ok" if compare_outputs(out, reference) else "DIFFERS"
            if verified != "cmp ok":
                log(f"  ERROR: {out} differs from {reference}")
        if self.a.keep_outputs:
            self.protect.add(name)
        self.rows.append(dict(kind="engine", tool="megatron2hf", ranks=nodes * per_node, nodes=nodes,
                              per_node=per_node, dtype=dtype, verified=verified, **s))

    def run_all(self):
        log(f"{self.label}: floor")
        self.floor()
        refs = {}
        if self.a.baseline_runs > 0:
            for dtype in self.a.dtypes:
                log(f"{self.label}: python baseline, --dtype {dtype}")
                try:
                    refs[dtype] = self.baseline(dtype)
                except RuntimeError as e:
                    log(f"  python baseline failed, no baseline ratio: {str(e).splitlines()[0]}")
        for layout in self.a.layouts:
            for dtype in self.a.dtypes:
                log(f"{self.label}: engine {layout[0]}x{layout[1]} ranks, --dtype {dtype}")
                self.engine(layout, dtype, refs.get(dtype))
        self.protect.clear()
        if not self.a.keep_outputs:
            self.clean()
        self.finish_rows()
        return self.rows

    def finish_rows(self):
        floor_s = self.floor_copy["seconds"]
        base = {r["dtype"]: r["seconds"] for r in self.rows if r["kind"] == "python"}
        first = {}
        for r in self.rows:
            r.update(size_gb=self.size_gb, format=self.fmt, model_bytes=self.model_bytes)
            r["gbps"] = self.model_bytes / r["seconds"] / GB if self.model_bytes else None
            r["x_floor"] = r["seconds"] / floor_s
            r["x_baseline"] = base[r["dtype"]] / r["seconds"] if r["kind"] == "engine" and r["dtype"] in base else None
            r["read_per_model"] = r["rchar"] / self.model_bytes if self.model_bytes else None
            r["disk_per_model"] = r["read_bytes"] / self.model_bytes if self.model_bytes else None
            if r["kind"] == "engine":
                first.setdefault(r["dtype"], r["seconds"])
                r["scaling"] = first[r["dtype"]] / r["seconds"]


def compare_outputs(a, b):
    names = sorted(n for n in os.listdir(b) if n.endswith(".safetensors") or n.endswith(".index.json"))
    if sorted(n for n in os.listdir(a) if n.endswith(".safetensors") or n.endswith(".index.json")) != names:
        return False
    return all(subprocess.run(["cmp", "-s", os.path.join(a, n), os.path.join(b, n)]).returncode == 0 for n in names)


# --------------------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------------------

def fmt_row(r, scaling):
    f = lambda v, spec: "" if v is None or v == "" else format(v, spec)
    what = r["tool"]
    ranks = str(r["ranks"])
    if r["kind"] == "engine" and r.get("nodes", 1) > 1:
        ranks = f"{r['ranks']} ({r['nodes']}x{r['per_node']})"
    size = r["size_gb"] if isinstance(r["size_gb"], str) else format(r["size_gb"], "g")
    cells = [size, r["format"], what, ranks, r["dtype"], f(r["seconds"], ".2f"), f(r.get("engine_s"), ".2f"),
             f(r.get("cpu_s"), ".2f"),
             f(r["gbps"], ".2f"), f(r["x_floor"], ".2f"), f(r["x_baseline"], ".1f"),
             f(r["maxrss_kib"] / 1024 if r["maxrss_kib"] else None, ".0f"), f(r["read_per_model"], ".3f"),
             f(r["disk_per_model"], ".3f")]
    if scaling:
        cells.append(f(r.get("scaling"), ".2f"))
    cells.append(r.get("verified", ""))
    return cells


HEADER = ["GB", "format", "tool", "ranks", "dtype", "seconds", "engine s", "CPU s", "GB/s", "x floor", "x faster than python",
          "peak RSS/rank MiB", "read/model", "disk read/model"]


def table(rows, scaling=False, markdown=True):
    head = HEADER + (["scaling"] if scaling else []) + ["check"]
    body = [fmt_row(r, scaling) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(c for c in row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def targets(rows, budget_bytes):
    """The issue's targets, evaluated on this run's rows. `ok` is True (met on wall-clock seconds), "engine time"
    (met only on the engine's own time, which leaves out mpirun start-up and exit) or False."""
    out = []

    def verdict(wall_ok, engine_ok):
        return True if wall_ok else ("engine time" if engine_ok else False)

    for (size, fmt) in sorted({(r["size_gb"], r["format"]) for r in rows}):
        rs = [r for r in rows if r["size_gb"] == size and r["format"] == fmt and r["kind"] == "engine"]
        src = [r for r in rs if r["dtype"] == "source"]
        if src:
            best = min(src, key=lambda r: r["x_floor"])
            floor_s = best["seconds"] / best["x_floor"]
            engine = min((r["engine_s"] / floor_s for r in src if r.get("engine_s")), default=None)
            shown = f"{best['x_floor']:.2f}x ({best['ranks']} ranks)"
            if engine is not None:
                shown += f" (engine time {engine:.2f}x)"
            out.append((size, fmt, "engine <= 1.5x floor (source)", shown,
                        verdict(best["x_floor"] <= 1.5, engine is not None and engine <= 1.5)))
        sp = [r for r in rs if r["x_baseline"] is not None]
        if sp:
            worst = min(sp, key=lambda r: r["x_baseline"])
            best = max(sp, key=lambda r: r["x_baseline"])
            out.append((size, fmt, ">= 5x faster than python", f"{worst['x_baseline']:.1f}x .. {best['x_baseline']:.1f}x",
                        best["x_baseline"] >= 5))
        if rs:
            worst = max(rs, key=lambda r: r["maxrss_kib"])
            lim = (budget_bytes + 256 * MIB) / MIB
            out.append((size, fmt, "peak RSS/rank <= budget + 256 MiB", f"{worst['maxrss_kib'] / 1024:.0f} MiB"
                        f" (limit {lim:.0f})", worst["maxrss_kib"] * 1024 <= budget_bytes + 256 * MIB))
            worst = max(rs, key=lambda r: abs(r["read_per_model"] - 1))
            out.append((size, fmt, "bytes read within 5% of model bytes", f"{worst['read_per_model']:.3f}",
                        abs(worst["read_per_model"] - 1) <= 0.05))
        cast = {r["ranks"]: r for r in rs if r["dtype"] != "source"}
        if 1 in cast and 2 in cast:
            # Judged on wall-clock seconds; the ratio of the engine's own times (without mpirun start-up and
            # exit, which do not shrink with ranks) is shown beside it.
            wall = cast[1]["seconds"] / cast[2]["seconds"]
            shown, engine = f"{wall:.2f}x", None
            if cast[1].get("engine_s") and cast[2].get("engine_s"):
                engine = cast[1]["engine_s"] / cast[2]["engine_s"]
                shown += f" (engine time {engine:.2f}x)"
            out.append((size, fmt, "cast: 2 ranks >= 1.6x faster than 1", shown,
                        verdict(wall >= 1.6, engine is not None and engine >= 1.6)))
    return out


# --------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------

def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def parse_layouts(a):
    if a.layouts:
        out = []
        for t in a.layouts.split(","):
            n, k = t.lower().split("x")
            out.append((int(n), int(k)))
        return out
    return [(1, int(r)) for r in a.ranks.split(",")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", default="0.5,2", help="GB of model weights, comma-separated (default 0.5,2)")
    ap.add_argument("--formats", default="torch,torch_dist")
    ap.add_argument("--ranks", default="1,2,4", help="engine ranks on this node (default 1,2,4)")
    ap.add_argument("--layouts", default=None, help="NODESxRANKS_PER_NODE,... (cluster; overrides --ranks)")
    ap.add_argument("--dtypes", default="source,bf16", help="engine --dtype values (default source,bf16)")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement, median reported (default 3)")
    ap.add_argument("--baseline-runs", type=int, default=None,
                    help="runs of the Python baseline (default: --runs; 0 skips it)")
    ap.add_argument("--baseline-max-gb", type=float, default=4.0,
                    help="skip the Python baseline above this size: it holds the model 2-3 times in memory")
    ap.add_argument("--memory-budget", default="256MiB", help="engine --memory-budget (default 256MiB)")
    ap.add_argument("--engine", default=os.path.join(ROOT, "build-bench", "bin", "megatron2hf"))
    ap.add_argument("--engine-args", default="", help="extra engine arguments")
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench"), help="scratch folder (default build/bench)")
    ap.add_argument("--input", default=None, help="measure this checkpoint root instead of generated ones")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) generated checkpoints")
    ap.add_argument("--keep-outputs", action="store_true", help="keep the engine outputs")
    ap.add_argument("--dense-optimizer", action="store_true",
                    help="generate optimizer state as data (default: zeros in sparse holes; see gen_checkpoint.py)")
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the page cache before every run (root): the checkpoint is read from disk")
    ap.add_argument("--memory-state", choices=["recycled", "settled"], default="recycled",
                    help="recycled (default): each run starts right after a scratch file of its output size was "
                         "written and deleted, so it writes into memory the guest just freed; settled: each run "
                         "starts 6 s after the last one, when a VM has handed freed memory back to the host "
                         "(first touch is then much slower; see docs/performance.md)")
    ap.add_argument("--launcher", choices=["mpirun", "srun"], default="mpirun")
    ap.add_argument("--mpirun-args", default="", help="extra mpirun arguments")
    ap.add_argument("--srun-args", default="", help="extra srun arguments, e.g. --mpi=pmix")
    ap.add_argument("--json", default=None, help="write all results here (default WORK/results.json)")
    ap.add_argument("--markdown", default=None, help="write the table and machine description here (default WORK/results.md)")
    a = ap.parse_args(argv)
    a.dtypes = [d for d in a.dtypes.split(",") if d]
    a.layouts = parse_layouts(a)
    if a.baseline_runs is None:
        a.baseline_runs = a.runs
    a.work = os.path.abspath(a.work)
    a.engine = os.path.abspath(a.engine)
    os.makedirs(a.work, exist_ok=True)
    if not os.access(a.engine, os.X_OK):
        sys.exit(f"bench: no engine at {a.engine} (build it: ci/bench.sh does)")
    budget = parse_size(a.memory_budget)
    runner = Runner(a)
    machine = machine_description(a.work)
    load0 = os.getloadavg()
    busy = subprocess.run("pgrep -a ctest", shell=True, capture_output=True, text=True).stdout.strip()
    if busy or load0[0] > 0.5:
        log(f"WARNING: the machine is busy (load {load0[0]:.2f}{'; ' + busy if busy else ''}); timings will be noisy")
    started = time.time()
    rows, gen_log = [], []

    cases = []
    if a.input:
        cases.append(("user", None))
    else:
        for s in a.sizes.split(","):
            for fmt in a.formats.split(","):
                cases.append((float(s), fmt))
    import gen_checkpoint
    for size, fmt in cases:
        if size == "user":
            root = os.path.abspath(a.input)
            from python_baseline import iteration_dir
            it = iteration_dir(root)
            if os.path.exists(os.path.join(it, ".metadata")):
                fmt, files = "torch_dist", sorted(glob.glob(os.path.join(it, "*.distcp")))
            else:
                fmt, files = "torch", sorted(glob.glob(os.path.join(it, "mp_rank_*", "model_optim_rng.pt")))
            case = Case(a, runner, "user", fmt, root, None, [(f, None) for f in files], f"{root} ({fmt})")
            case.run_all()
            rows += case.rows
            continue
        ck = os.path.join(a.work, f"ckpt-{size:g}GB-{fmt}")
        meta_path = os.path.join(ck, "bench.json")
        meta = None
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
            if fmt not in meta["formats"]:
                meta = None
        if meta is None:
            shutil.rmtree(ck, ignore_errors=True)
            # model (+ 3x optimizer when dense) + engine outputs + baseline outputs + floor copy + scratch
            need = size * GB * (8.5 if a.dense_optimizer else 5.5)
            if free_bytes(a.work) < need:
                log(f"SKIP {size:g} GB {fmt}: needs ~{need / GB:.0f} GB free in {a.work}, "
                    f"{free_bytes(a.work) / GB:.0f} GB free")
                continue
            t0 = time.monotonic()
            meta = gen_checkpoint.generate(ck, size, (fmt,), log=log, sparse=not a.dense_optimizer)
            t_gen = time.monotonic() - t0
            t0 = time.monotonic()
            os.sync()  # the generated files reach the disk before anything is timed
            gen_log.append(dict(size_gb=size, format=fmt, generate_s=round(t_gen, 1),
                                sync_s=round(time.monotonic() - t0, 1)))
            log(f"generated {size:g} GB {fmt} in {t_gen:.0f} s, sync {time.monotonic() - t0:.0f} s")
        info = meta["formats"][fmt]
        if fmt == "torch":
            floor_files = [(os.path.join(ck, "checkpoint", rel), None) for rel in sorted(info["files"])]
            root = os.path.join(ck, "checkpoint")
        else:
            floor_files = [(os.path.join(ck, info["iter_dir"], n), p) for n, p in sorted(info["files"].items()) if p]
            root = os.path.join(ck, "checkpoint_dist")
        saved = a.baseline_runs
        if size > a.baseline_max_gb:
            a.baseline_runs = 0
        case = Case(a, runner, size, fmt, root, meta["model_bytes"], floor_files, f"{size:g} GB {fmt}")
        try:
            case.run_all()
        finally:
            a.baseline_runs = saved
        rows += case.rows
        log("\n" + table(case.rows, markdown=False))
        if not a.keep:
            shutil.rmtree(ck, ignore_errors=True)
    shutil.rmtree(os.path.join(a.work, "out"), ignore_errors=True)

    scaling = any(r.get("nodes", 1) > 1 for r in rows) or a.launcher == "srun"
    load1 = os.getloadavg()
    tgt = targets(rows, budget)
    cmdline = "ci/bench.sh " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    md = [f"Run {machine['date']} on {machine['host']}: `{cmdline}` ({(time.time() - started) / 60:.1f} min)", "",
          f"- CPU: {machine['cpu']}", f"- memory: {machine['memory_gib']} GiB", f"- OS / kernel: {machine['os']}, "
          f"Linux {machine['kernel']}", f"- filesystem of the checkpoints and outputs: {machine['filesystem']}",
          f"- MPI: {machine['mpirun']}" + (f" (OMPI_MCA_pml={os.environ.get('OMPI_MCA_pml', 'ob1')}, "
                                           f"OMPI_MCA_btl={os.environ.get('OMPI_MCA_btl', 'self,vader')})"
                                           if a.launcher == "mpirun" else "") + f"; torch {machine['torch']} (baseline)",
          f"- engine --memory-budget {a.memory_budget}; {a.runs} runs per row (median), baseline {a.baseline_runs}; "
          f"memory state {a.memory_state}; page cache {'dropped before every run' if a.drop_caches else 'warm'}; "
          f"generated optimizer state {'dense' if a.dense_optimizer else 'sparse zeros'}",
          f"- load average at start {load0[0]:.2f}, at end {load1[0]:.2f}" + (f"; ctest running: {busy}" if busy else ""),
          ""]
    if gen_log:
        md += ["Generation: " + "; ".join(f"{g['size_gb']:g} GB {g['format']} {g['generate_s']} s + sync {g['sync_s']} s"
                                          for g in gen_log), ""]
    md += [table(rows, scaling), "", "| GB | format | target | measured | met |", "|---|---|---|---|---|"]
    md += [f"| {s} | {f} | {name} | {val} | {ok if isinstance(ok, str) else ('yes' if ok else 'NO')} |"
           for s, f, name, val, ok in tgt]
    text = "\n".join(md) + "\n"
    print(table(rows, scaling, markdown=False))
    print()
    for s, f, name, val, ok in tgt:
        print(f"{s} GB {f}: {name}: {val} -> {('met on ' + ok) if isinstance(ok, str) else ('met' if ok else 'MISSED')}")
    json_path = a.json or os.path.join(a.work, "results.json")
    md_path = a.markdown or os.path.join(a.work, "results.md")
    with open(json_path, "w") as f:
        json.dump({"machine": machine, "args": vars(a), "load": [load0, load1], "generation": gen_log, "rows": rows,
                   "targets": tgt}, f, indent=1, default=str)
    with open(md_path, "w") as f:
        f.write(text)
    log(f"results: {md_path}, {json_path}")
    bad = [r for r in rows if r.get("verified") == "DIFFERS"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
