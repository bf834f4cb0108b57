#!/usr/bin/python3
"""The cost model against a network: the generated 2 GB benchmark checkpoint converted across the hosts of
ci/cluster-up.sh (one machine, hosts in network namespaces) with every host's link shaped by `tc tbf` to a few
bandwidths, --readers writers and --readers files, measured against bench/cost_model.py (docs/scaling.md).

    ci/cluster-up.sh && /usr/bin/python3 bench/cross_host.py --engine build-bench/bin/megatron2hf

What it measures per (link rate, reader mode): wall seconds of `srun -N 3 --ntasks-per-node R megatron2hf` from
node01 (median of --runs, the checkpoint in the page cache, write-back finished before each run) and the bytes
that crossed the hosts' links (the veth counters). The model is fed what this machine is: one filesystem and two
cores shared by every "host", so the filesystem terms use the machine's own read and write rates as aggregate caps
(fitted from `cat` and `cp` of the same files, as `cost_model.py --calibrate` does), the copy rate per rank is the
single-rank rate scaled by cores / ranks, t0 is the wall time of a tiny conversion on the same ranks, and the
network is the shaped rate per host and direction.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import cost_model  # noqa: E402
import gen_checkpoint  # noqa: E402
from bench import wait_writeback  # noqa: E402

CLUSTER_RUN = os.path.join(ROOT, "ci", "cluster-run.sh")


def log(msg):
    print(f"[cross-host {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def hosts(cluster_dir):
    with open(os.path.join(cluster_dir, "hosts")) as f:
        return [dict(zip(("name", "netns", "address", "link"), line.split())) for line in f if line.strip()]


def shape(cluster, gbit):
    """Both directions of every host's link at `gbit` Gbit/s (None: unshaped). tbf needs a burst of at least
    rate / HZ; 1/100 s of the rate is comfortably more."""
    for h in cluster:
        for where in ([], ["ip", "netns", "exec", h["netns"]]):
            dev = "eth0" if where else h["link"]
            subprocess.run(where + ["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)
            if gbit:
                burst = max(1 << 20, int(gbit * 1e9 / 8 / 100))
                subprocess.run(where + ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{gbit}gbit",
                                        "burst", str(burst), "latency", "100ms"], check=True)


def link_counters(cluster):
    """Per host: (bytes out of the host, bytes into it), from this machine's end of its link."""
    out = []
    for h in cluster:
        stats = f"/sys/class/net/{h['link']}/statistics/"
        with open(stats + "rx_bytes") as rx, open(stats + "tx_bytes") as tx:
            out.append((int(rx.read()), int(tx.read())))
    return out


def mpi_env(cluster):
    subnet = cluster[0]["address"].rsplit(".", 1)[0] + ".0/24"
    return dict(os.environ, OMPI_MCA_pml="ob1", OMPI_MCA_btl="self,vader,tcp", OMPI_MCA_btl_tcp_if_include=subnet,
                OMPI_MCA_oob_tcp_if_include=subnet)


def convert(a, cluster, source, out, readers, ranks_per_node):
    """One timed conversion: (wall s, bytes over all links, bytes over the busiest link in one direction)."""
    subprocess.run(["rm", "-rf", out], check=True)
    wait_writeback()
    before = link_counters(cluster)
    cmd = [CLUSTER_RUN, "node01", "srun", f"--nodes={len(cluster)}", f"--ntasks-per-node={ranks_per_node}",
           "--mpi=pmix", a.engine, "--input", source, "--output", out, "--readers", readers, "--no-fsync"]
    start = time.monotonic()
    p = subprocess.run(cmd, env=mpi_env(cluster), capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - start
    if p.returncode:
        raise SystemExit(f"cross_host: {shlex.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    moved = [(rx - rx0, tx - tx0) for (rx, tx), (rx0, tx0) in zip(link_counters(cluster), before)]
    return wall, sum(rx for rx, _ in moved), max(max(d) for d in moved)


def floor(files, scratch):
    """Seconds of `cat` and of `cp` of the checkpoint's rank files (page cache warm), as bench.py's floor."""
    subprocess.run("cat " + " ".join(map(shlex.quote, files)) + " > /dev/null", shell=True, check=True)
    times = {}
    for tool, cmd in (("cat", "cat {} > /dev/null"), ("cp", "cp --reflink=never {} " + shlex.quote(scratch))):
        subprocess.run(["rm", "-rf", scratch], check=True)
        os.makedirs(scratch)
        wait_writeback()
        start = time.monotonic()
        for f in files:
            subprocess.run(cmd.format(shlex.quote(f)), shell=True, check=True)
        times[tool] = time.monotonic() - start
    subprocess.run(["rm", "-rf", scratch], check=True)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--cluster-dir", default=os.environ.get("M2H_CLUSTER_DIR", "/tmp/m2h-cluster"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--size", type=float, default=2.0, help="GB of the generated checkpoint (legacy format)")
    ap.add_argument("--rates", default="1,5,10", help="link rates in Gbit/s; 'none' adds an unshaped row")
    ap.add_argument("--ranks-per-node", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--single-rank-copy", type=float, default=2.0, help="GB/s one rank reads, casts and checksums "
                    "(docs/performance.md's calibration)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    a.engine = os.path.abspath(a.engine)
    os.environ["SLURM_CONF"] = os.path.join(a.cluster_dir, "slurm.conf")
    os.environ["M2H_CLUSTER_DIR"] = a.cluster_dir
    cluster = hosts(a.cluster_dir)
    N, r = len(cluster), a.ranks_per_node

    ck, meta = gen_checkpoint.generated(a.work, a.size, "torch", log=log)
    M = meta["model_bytes"]
    files = [os.path.join(ck, "checkpoint", rel) for rel in sorted(meta["formats"]["torch"]["files"])]
    source = os.path.join(ck, "checkpoint")
    out = os.path.join(a.work, "out-cross-host")

    fl = floor(files, os.path.join(a.work, "out-floor"))
    tiny = os.path.join(ROOT, "tests", "golden", "mcore-0.19.2_llama_tp2_pp2_distopt_bf16", "torch")
    shape(cluster, None)
    t0 = statistics.median(convert(a, cluster, tiny, out + "-tiny", "writers", r)[0] for _ in range(a.runs))
    p = argparse.Namespace(fs_read=float("inf"), fs_write=float("inf"), fs_aggregate_read=M / fl["cat"] / 1e9,
                           fs_aggregate_write=M / max(1e-9, fl["cp"] - fl["cat"]) / 1e9, k=2.0,
                           copy=a.single_rank_copy * min(1.0, (os.cpu_count() or 1) / (N * r)), t0=t0)
    log(f"{N} hosts x {r} rank(s); {M / 1e9:.2f} GB; fitted: read {p.fs_aggregate_read:.2f} GB/s, write "
        f"{p.fs_aggregate_write:.2f} GB/s, copy {p.copy:.2f} GB/s/rank, t0 {t0:.2f} s")

    rows = []
    rates = [None if x == "none" else float(x) for x in a.rates.split(",")]
    try:
        for gbit in rates:
            shape(cluster, gbit)
            for readers in ("writers", "files"):
                runs = [convert(a, cluster, source, out, readers, r) for _ in range(a.runs)]
                wall = statistics.median(w for w, _, _ in runs)
                crossed = statistics.median(b for _, b, _ in runs)
                busiest = statistics.median(b for _, _, b in runs)
                p.readers = readers
                p.net = gbit / 8 if gbit else float("inf")
                p.link_share = None
                serial, pipelined, overlap, limit, parts = cost_model.predict(M, M, N, r, p)
                model_crossed = (M * (N - 1) / N) if readers == "files" else 0
                # The model again with the share of the bytes the busiest link actually carried one way, in place
                # of evenly spread pairs (cost_model.py --link-share).
                with_links = cost_model.predict(M, M, N, r, argparse.Namespace(**{**vars(p), "link_share": busiest / M}))[1]
                rows.append(dict(gbit=gbit, readers=readers, wall_s=round(wall, 2), link_bytes=crossed,
                                 busiest_link_bytes=busiest, model_link_bytes=round(model_crossed),
                                 pipelined_s=round(pipelined, 2), with_links_s=round(with_links, 2),
                                 overlapped_s=round(overlap, 2), exchange_s=round(parts["exchange"], 2), limit=limit))
                log(f"{gbit or 'unshaped'} Gbit/s, --readers {readers}: {wall:.2f} s (model {pipelined:.2f} s, "
                    f"{limit}), {crossed / 1e9:.2f} GB over the links (model {model_crossed / 1e9:.2f})")
    finally:
        shape(cluster, None)
        subprocess.run(["rm", "-rf", out, out + "-tiny"])

    print("| link | readers | measured s | model s (exchange s) | measured / model | GB over the links: measured "
          "(busiest link, one way) | model | model with the measured busiest link s | measured / that |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        link = f"{row['gbit']:g} Gbit/s" if row["gbit"] else "unshaped"
        print(f"| {link} | {row['readers']} | {row['wall_s']:.2f} | {row['pipelined_s']:.2f} ({row['exchange_s']:.2f}) "
              f"| {row['wall_s'] / row['pipelined_s']:.2f} | {row['link_bytes'] / 1e9:.2f} "
              f"({row['busiest_link_bytes'] / 1e9:.2f}) | {row['model_link_bytes'] / 1e9:.2f} | "
              f"{row['with_links_s']:.2f} | {row['wall_s'] / row['with_links_s']:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(hosts=N, ranks_per_node=r, model_bytes=M, fitted=vars(p), rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
