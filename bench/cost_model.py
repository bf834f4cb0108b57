#!/usr/bin/python3
"""Cost model of a megatron2hf conversion across nodes (docs/scaling.md).

  cost_model.py                         # the docs/scaling.md table (8B, 70B, 405B, 671B bf16 on 1-64 nodes)
  cost_model.py --calibrate results.json  # the model's single-machine prediction against a bench/bench.py run
  cost_model.py --fs-read 2 --fs-write 1 --net 25 --fs-aggregate-read 50 --fs-aggregate-write 25  # GB/s

Per conversion of M model bytes (read) into W output bytes (W = M with --dtype source, M/2 for fp32 -> bf16) on
N nodes with r ranks per node (p = N r ranks):

  read      t_r = M / min(N * fs_read, fs_aggregate_read)       every model byte read once, optimizer never
  exchange  t_x = x W s / net, s = (N-1)/N^2 by default         --readers files (x = 1): a byte goes from its
                                                                reader straight to its writer, over the network
                                                                at most once, not at all within a node;
                                                                --readers writers (the default, x = 0): writers
                                                                read what they write, nothing is exchanged
  write     t_w = W / min(N * fs_write, fs_aggregate_write)
  copies    t_c = (M + x k W (p-1)/p) / (p * copy)              user-space copies: the read (cast there); with
                                                                --readers files also the Alltoallv and placing
                                                                into the window (k = 2; the 1/p of pieces a writer
                                                                reads itself skip them), `copy` GB/s/rank
  fixed     t_0                                                 start-up, index (pickle/metadata), plan

  serial (stages of a round one after another; the engine with --format hdf5):  T = t_0 + t_r + t_x + t_w + t_c
  pipelined (round r written on a second thread while round r + 1 is read and
  exchanged; the engine with safetensors output):                                T = t_0 + max(t_r + t_x + t_c, t_w)
  overlapped (every stage at once; a lower bound):                               T = t_0 + max(t_r, t_x, t_w, t_c)
"""

import argparse
import json
import sys

MODELS = [("8B", 8.03e9), ("70B", 70.6e9), ("405B", 405.9e9), ("671B", 671.0e9)]
NODES = [1, 2, 4, 8, 16, 32, 64]


def predict(M, W, N, r, p):
    t_r = M / min(N * p.fs_read, p.fs_aggregate_read) / 1e9
    x = 1 if p.readers == "files" else 0  # with --readers writers nothing crosses MPI
    # Evenly spread pairs put (N-1)/N^2 of W on each node's link; a layout can load one link more (--link-share).
    share = getattr(p, "link_share", None) or (N - 1) / (N * N)
    t_x = x * W * share / p.net / 1e9
    t_w = W / min(N * p.fs_write, p.fs_aggregate_write) / 1e9
    ranks = N * r
    t_c = (M + x * p.k * W * (ranks - 1) / ranks) / (ranks * p.copy) / 1e9  # a writer's own pieces skip k copies
    serial = p.t0 + t_r + t_x + t_w + t_c
    pipelined = p.t0 + max(t_r + t_x + t_c, t_w)
    overlap = p.t0 + max(t_r, t_x, t_w, t_c)
    parts = {"read": t_r, "exchange": t_x, "write": t_w, "copies": t_c}
    return serial, pipelined, overlap, max(parts, key=parts.get), parts


def fmt_t(s):
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 120:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def table(p):
    lines = [f"fs read {p.fs_read:g} GB/s/node (aggregate {p.fs_aggregate_read:g}), fs write {p.fs_write:g} GB/s/node "
             f"(aggregate {p.fs_aggregate_write:g}), network {p.net:g} GB/s/node, copies {p.copy:g} GB/s/rank, "
             f"{p.ranks_per_node} ranks/node, t0 {p.t0:g} s; bf16 source, --dtype source, --readers {p.readers}", "",
             "| model | bytes | " + " | ".join(f"{n} node{'s' if n > 1 else ''}" for n in NODES) + " | limit at 4 nodes |",
             "|---|---|" + "---|" * len(NODES) + "---|"]
    for name, params in MODELS:
        M = W = 2 * params
        cells = []
        for n in NODES:
            serial, pipelined, overlap, _, _ = predict(M, W, n, p.ranks_per_node, p)
            cells.append(f"{fmt_t(serial)} / {fmt_t(pipelined)} / {fmt_t(overlap)}")
        _, _, _, lim, parts = predict(M, W, 4, p.ranks_per_node, p)
        lines.append(f"| {name} | {M / 1e12:.2f} TB | " + " | ".join(cells) + f" | {lim} ({fmt_t(parts[lim])}) |")
    lines += ["", "Each cell: serial (hdf5 output) / pipelined (safetensors output, the engine's default) / "
                  "overlapped (lower bound)."]
    return "\n".join(lines)


def calibrate(path, p):
    """Fit fs_read / fs_write from one bench run's floor rows and compare predictions with its engine rows."""
    with open(path) as f:
        res = json.load(f)
    rows = res["rows"]
    out = []
    for size, fmt in sorted({(r["size_gb"], r["format"]) for r in rows}, key=str):
        rs = [r for r in rows if r["size_gb"] == size and r["format"] == fmt]
        cat = next(r for r in rs if r["kind"] == "floor" and r["tool"] in ("cat", "dd (read)"))
        cp = next(r for r in rs if r["kind"] == "floor" and r["tool"] in ("cp", "dd (copy)"))
        M = rs[0]["model_bytes"]
        q = argparse.Namespace(**vars(p))
        q.fs_read = M / cat["seconds"] / 1e9
        q.fs_write = M / max(1e-9, cp["seconds"] - cat["seconds"]) / 1e9
        q.fs_aggregate_read = q.fs_aggregate_write = float("inf")
        for r in rs:
            if r["kind"] != "engine":
                continue
            W = M if r["dtype"] == "source" else M // 2
            serial, pipelined, overlap, lim, _ = predict(M, W, 1, r["ranks"], q)
            out.append(f"| {size} | {fmt} | {r['ranks']} | {r['dtype']} | {r['seconds']:.2f} | {serial:.2f} | "
                       f"{pipelined:.2f} | {overlap:.2f} | {r['seconds'] / pipelined:.2f} |")
    head = (f"fitted per machine from its floor rows (read = model/cat, write = model/(cp - cat)); copies "
            f"{p.copy:g} GB/s/rank, t0 {p.t0:g} s\n\n| GB | format | ranks | dtype | measured s | model (serial) s | "
            f"model (pipelined) s | model (overlapped) s | measured / pipelined |\n|---|---|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--fs-read", type=float, default=5.0, help="filesystem read GB/s per client node")
    ap.add_argument("--fs-write", type=float, default=5.0, help="filesystem write GB/s per client node")
    ap.add_argument("--fs-aggregate-read", type=float, default=200.0, help="filesystem read GB/s, all clients")
    ap.add_argument("--fs-aggregate-write", type=float, default=100.0, help="filesystem write GB/s, all clients")
    ap.add_argument("--net", type=float, default=25.0, help="network GB/s per node and direction (HDR IB: 25)")
    ap.add_argument("--link-share", type=float, default=None,
                    help="with --readers files: the share of W that crosses the busiest node link in one direction "
                         "(default (N-1)/N^2, pairs spread evenly; 0.50 measured on 3 hosts, docs/scaling.md)")
    ap.add_argument("--copy", type=float, default=4.0, help="user-space copy GB/s per rank")
    ap.add_argument("--k", type=float, default=2.0, help="user-space copies of each output byte after the read")
    ap.add_argument("--readers", choices=["writers", "files"], default="writers",
                    help="the engine's --readers: who reads each source byte")
    ap.add_argument("--ranks-per-node", type=int, default=8)
    ap.add_argument("--t0", type=float, default=2.0, help="fixed seconds: start-up, index, plan")
    ap.add_argument("--calibrate", default=None, help="a bench/bench.py results.json")
    a = ap.parse_args(argv)
    print(calibrate(a.calibrate, a) if a.calibrate else table(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
