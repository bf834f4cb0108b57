#!/usr/bin/python3
"""Fast synthetic Megatron-LM checkpoints of a given size for the benchmark (legacy `torch` and `torch_dist`).

The structure (args, key names, TP/PP layout, fused QKV, SwiGLU halves, TE extra state, RNG state, DCP metadata
classes) comes from the test fixture library, tests/fixtures/megatron_fixture.py, so what the engine reads is what
the tests check. What differs is speed and memory: tensor values are slices of ONE random pool instead of a fresh
`torch.randn` per tensor, optimizer state is filled by copying that pool, and torch_dist items are serialized and
written one at a time instead of all in memory. Files are still written with the real `torch.save`.

Optimizer state: by default all zeros, stored as holes (fallocate PUNCH_HOLE) over the tensor data records, so
the files have their real sizes, offsets and zip/pickle structure (valid torch.save archives) but the optimizer
bytes cost no disk writes or space: nothing in the benchmark reads them (the engine and the baseline skip them,
the floor reads model bytes only). --dense-optimizer writes them as data.

Layout written (a model of SIZE GB of fp32 weights by default, TP 2 x PP 2, Llama-style: GQA, SwiGLU, untied):
  OUT/checkpoint/iter_0000100/mp_rank_TT_SSS/model_optim_rng.pt   model + args + RNG (distributed optimizer)
  OUT/checkpoint/iter_0000100/mp_rank_TT_SSS/distrib_optim.pt     fp32 param, exp_avg, exp_avg_sq (3x model)
  OUT/checkpoint_dist/iter_0000100/__R_{0,1}.distcp, .metadata, common.pt, metadata.json
      model chunks and `fully_reshardable` optimizer state (exp_avg, exp_avg_sq, fp32_param: 3x model).
      Within each data file the model items come first, so the floor can read exactly the model bytes of a
      file with plain tools (`dd count=PREFIX`); the engine only follows the .metadata offsets.
  OUT/bench.json   sizes: model bytes, the per-file model byte prefixes, the dims.
"""

import argparse
import collections
import ctypes
import dataclasses
import io
import json
import os
import random
import struct
import sys
import time
import uuid

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
import megatron_fixture as mf  # noqa: E402

ITERATION = 100

#: Model shapes by size bracket (hidden, heads, kv heads, ffn, padded vocab); the layer count is chosen to hit
#: the requested size. Llama-like proportions.
SHAPES = [
    (1.0, dict(hidden=1024, heads=16, kv_heads=8, ffn=2816, padded_vocab=16384)),
    (4.0, dict(hidden=2048, heads=16, kv_heads=8, ffn=5632, padded_vocab=32768)),
    (16.0, dict(hidden=4096, heads=32, kv_heads=8, ffn=11008, padded_vocab=65536)),
    (float("inf"), dict(hidden=8192, heads=64, kv_heads=8, ffn=28672, padded_vocab=131072)),
]
ELEM = {"fp32": 4, "bf16": 2, "fp16": 2}


def params_of(shape, layers):
    H, F, V = shape["hidden"], shape["ffn"], shape["padded_vocab"]
    hd = H // shape["heads"]
    per_layer = H * (shape["heads"] * hd + 2 * shape["kv_heads"] * hd) + H * shape["heads"] * hd + 3 * H * F + 2 * H
    return 2 * V * H + H + layers * per_layer, per_layer


def choose_spec(size_gb, dtype, tp, pp, arch="llama"):
    """FixtureSpec of about size_gb * 1e9 bytes of model weights in `dtype`."""
    target = size_gb * 1e9 / ELEM[dtype]
    shape = next(s for limit, s in SHAPES if size_gb <= limit)
    embed, per_layer = params_of(shape, 0)
    layers = max(pp, int(round(max(0.0, target - embed) / per_layer / pp)) * pp)
    return mf.FixtureSpec(arch=arch, tp=tp, pp=pp, layers=layers, dtype=dtype, dist_opt_views=True,
                          iterations=(ITERATION,), format="both", **shape)


class Pool:
    """Random values drawn once; tensors are slices of it at name-dependent offsets (distinct, cheap)."""

    def __init__(self, numel, seed):
        gen = torch.Generator().manual_seed(seed)
        self.spread = 1 << 20
        self.data = 0.02 * torch.randn(numel + self.spread, generator=gen, dtype=torch.float32)

    def slice(self, key, numel):
        off = (hash_name(key) % self.spread)
        return self.data[off:off + numel]

    def fill(self, out, key):
        """Fill a 1-D fp32 tensor by tiling pool slices (memcpy speed)."""
        n, at = out.numel(), 0
        step = self.data.numel() - self.spread
        k = hash_name(key)
        while at < n:
            m = min(step, n - at)
            off = (k + at) % self.spread
            out[at:at + m].copy_(self.data[off:off + m])
            at += m
        return out


FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
_libc = None


def punch_hole(fd, start, length):
    """Deallocate whole 4 KiB blocks of [start, start+length): they read back as zeros and never reach the disk."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    lo = (start + 4095) // 4096 * 4096
    hi = (start + length) // 4096 * 4096
    if hi > lo and _libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, lo, hi - lo) != 0:
        raise OSError(ctypes.get_errno(), "fallocate(PUNCH_HOLE) failed")


def storage_records(f, base=0, size=None):
    """(offset, length) of every data/ record of the torch.save zip archive at [base, base+size) of file f."""
    import zipfile
    f.seek(base)
    blob = f.read(size) if size is not None else f.read()
    out = []
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        for info in z.infolist():
            if "/data/" not in info.filename:
                continue
            h = blob[info.header_offset:info.header_offset + 30]
            n, m = struct.unpack("<HH", h[26:30])
            out.append((base + info.header_offset + 30 + n + m, info.file_size))
    return out


def sparsify(path, ranges):
    """Punch holes over byte ranges whose content is all zeros (optimizer state in --sparse-optimizer mode)."""
    fd = os.open(path, os.O_RDWR)
    try:
        for start, length in ranges:
            punch_hole(fd, start, length)
    finally:
        os.close(fd)


def hash_name(s):
    h = 1469598103934665603
    for b in s.encode():
        h = ((h ^ b) * 1099511628211) & ((1 << 64) - 1)
    return h


def cheap_truth(args, arch, pool):
    """HF-layout truth whose tensors are views of the pool (no per-tensor random draw)."""
    truth = collections.OrderedDict()
    for name, shape, kind in mf.hf_tensor_specs(args, arch):
        n = 1
        for x in shape:
            n *= x
        x = pool.slice(name, n).view(shape)
        if kind == "norm":
            x = 1.0 + 5.0 * x
        truth[name] = x.to(args.params_dtype) if args.params_dtype != torch.float32 else x
    return truth


# --------------------------------------------------------------------------------------------------------------
# legacy --ckpt-format torch (distributed optimizer: model_optim_rng.pt + distrib_optim.pt)
# --------------------------------------------------------------------------------------------------------------

def write_legacy(ckpt, truth, args, spec, pool, log, sparse=True):
    d = mf.dims_from_args(args)
    name = mf.iteration_dir_name(ITERATION, False)
    info = {"files": {}}
    for s in range(d.p):
        cache = {}
        for r in range(d.t):
            rng = random.Random(spec.seed * 7919 + s * 101 + r)
            chunks = [mf.chunk_state_dict(truth, args, spec.layer_spec, s, 0, r, cache, rng)]
            buf = mf.to_dist_opt_views(chunks, args.params_dtype, rng)
            n = sum(v.numel() for v in chunks[0].values() if isinstance(v, torch.Tensor) and v.dtype == args.params_dtype)
            state = {"args": args, "checkpoint_version": 3.0, "iteration": ITERATION, "model": chunks[0],
                     "optimizer": mf.optimizer_state(chunks, args, None),
                     "opt_param_scheduler": mf.scheduler_state(ITERATION),
                     "rng_state": mf.rng_states(spec.seed + s * 13 + r),
                     "num_floating_point_operations_so_far": 123_456_789_012_345 * ITERATION}
            path = os.path.join(ckpt, name, mf.rank_dir_name(r, s, d.p))
            os.makedirs(path, exist_ok=True)
            model_file = os.path.join(path, "model_optim_rng.pt")
            torch.save(state, model_file)
            del state, chunks
            opt = {}
            for k in ("param", "exp_avg", "exp_avg_sq"):
                opt[k] = torch.zeros(n + 16) if sparse else pool.fill(torch.empty(n + 16), f"{k}/{s}/{r}")
            key = (args.params_dtype, torch.float32)
            opt_file = os.path.join(path, "distrib_optim.pt")
            torch.save({"per_bucket_numel": [[{key: [n + 16]}]], "per_bucket_numel_unpadded": [[{key: [n]}]],
                        0: {key: opt}}, opt_file)
            if sparse:
                with open(opt_file, "rb") as f:
                    sparsify(opt_file, storage_records(f))
            del opt, buf
            rel = os.path.relpath(model_file, ckpt)
            info["files"][rel] = os.path.getsize(model_file)
            log(f"  legacy {rel}: {os.path.getsize(model_file) / 1e9:.2f} GB model file")
        cache.clear()
    with open(os.path.join(ckpt, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(ITERATION))
    return info


# --------------------------------------------------------------------------------------------------------------
# torch_dist (streamed: one item serialized at a time)
# --------------------------------------------------------------------------------------------------------------

def write_dist(ckpt_dist, truth, args, spec, pool, log, sparse=True):
    D = mf.dcp_classes()
    d = mf.dims_from_args(args)
    dargs = argparse.Namespace(**vars(args))
    dargs.ckpt_format, dargs.save, dargs.load, dargs.use_dist_ckpt = "torch_dist", ckpt_dist, ckpt_dist, True
    iter_dir = os.path.join(ckpt_dist, mf.iteration_dir_name(ITERATION, False))
    os.makedirs(iter_dir, exist_ok=True)
    rng = random.Random(spec.seed * 7919 + ITERATION)
    model = mf.dcp_model_items(truth, dargs, spec.dcp_keys, spec.layer_spec, rng)
    tensors = [i for i in model if i.tensor is not None]
    # optimizer items: same chunking, fp32; tensors are made when written (kind, model item)
    opt = [(kind, it) for kind in ("exp_avg", "exp_avg_sq", "fp32_param") for it in tensors]
    objs = [i for i in model if i.tensor is None]
    for s in range(d.p):
        for r in range(d.t):
            objs.append(mf.DcpItem(f"rng_state/shard_{s}.{r}_{d.p}.{d.t}", mf._saver_rank(d, r, s, 0),
                                   obj=[mf.rng_states(spec.seed + s * 13 + r, dp=1)]))
    torch.save(mf.dcp_common_state(dargs, ITERATION, False), os.path.join(iter_dir, "common.pt"))

    # metadata entries in the fixture's order: model tensors, optimizer, objects
    state_dict_metadata, storage_data, mcore_data, chunk_index = {}, {}, {}, {}

    def declare(fqn, dtype, gshape, offsets, sizes, key):
        if fqn not in state_dict_metadata:
            state_dict_metadata[fqn] = D.TensorStorageMetadata(D.TensorProperties(dtype=dtype), torch.Size(gshape), [])
            mcore_data[fqn] = {}
        chunks = state_dict_metadata[fqn].chunks
        chunk_index[key] = len(chunks)
        chunks.append(D.ChunkStorageMetadata(torch.Size(offsets), torch.Size(sizes)))

    for it in tensors:
        declare(it.fqn, it.tensor.dtype, it.global_shape, it.offsets, it.sizes, ("m", id(it)))
    for kind, it in opt:
        declare(f"optimizer.state.{kind}.{it.fqn}", torch.float32, it.global_shape, it.offsets, it.sizes,
                (kind, id(it)))
    for it in objs:
        state_dict_metadata[it.fqn] = D.BytesStorageMetadata()

    # buckets per saver rank, torch's rule (objects round-robin, tensors largest first into the lightest)
    per_rank = collections.defaultdict(lambda: {"m": [], "o": [], "b": []})
    for it in tensors:
        per_rank[it.rank]["m"].append(it)
    for kind, it in opt:
        per_rank[it.rank]["o"].append((kind, it))
    for it in objs:
        per_rank[it.rank]["b"].append(it)
    info = {"files": {}}
    for rank in sorted(per_rank):
        g = per_rank[rank]
        buckets = [{"m": [], "o": [], "b": []} for _ in range(2)]
        load = [0, 0]
        for k, it in enumerate(g["b"]):
            buckets[k % 2]["b"].append(it)
        sized = [("m", it, it.tensor.numel() * it.tensor.element_size()) for it in g["m"]]
        sized += [("o", ki, ki[1].tensor.numel() * 4) for ki in g["o"]]
        for cls, x, nb in sorted(sized, key=lambda e: -e[2]):
            j = load.index(min(load))
            buckets[j][cls].append(x)
            load[j] += nb
        for n, b in enumerate(buckets):
            if not (b["m"] or b["o"] or b["b"]):
                continue
            fname = f"__{rank}_{n}.distcp"
            holes = []
            with open(os.path.join(iter_dir, fname), "wb") as f:
                for it in b["m"]:  # model chunks first: the floor reads this prefix
                    data = mf._torch_save_bytes(it.tensor)
                    pos = f.tell()
                    f.write(data)
                    storage_data[D.MetadataIndex(it.fqn, it.offsets, chunk_index[("m", id(it))])] = \
                        D.StorageInfo(fname, pos, len(data), None)
                prefix = f.tell()
                for it in b["b"]:
                    data = mf._torch_save_bytes(it.obj)
                    pos = f.tell()
                    f.write(data)
                    storage_data[D.MetadataIndex(it.fqn, None, None)] = D.StorageInfo(fname, pos, len(data), None)
                for kind, it in b["o"]:
                    if sparse:
                        t = torch.zeros(it.tensor.shape)
                    elif kind == "fp32_param":
                        t = it.tensor.float()
                    else:
                        t = pool.fill(torch.empty(it.tensor.numel(), dtype=torch.float32), f"{kind}/{it.fqn}/{it.offsets}")
                        t = t.view(it.tensor.shape)
                    data = mf._torch_save_bytes(t)
                    pos = f.tell()
                    f.write(data)
                    fqn = f"optimizer.state.{kind}.{it.fqn}"
                    storage_data[D.MetadataIndex(fqn, it.offsets, chunk_index[(kind, id(it))])] = \
                        D.StorageInfo(fname, pos, len(data), None)
                    if sparse:
                        holes += [(pos + o, n_) for o, n_ in storage_records(io.BytesIO(data))]
                    del t, data
            if holes:
                sparsify(os.path.join(iter_dir, fname), holes)
            info["files"][fname] = prefix
        log(f"  torch_dist saver rank {rank}: {sum(info['files'].get(f'__{rank}_{n}.distcp', 0) for n in range(2)) / 1e9:.2f} GB of model items")
    del model, tensors
    save_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    md = mf.dcp_root(spec.dcp_variant, state_dict_metadata, storage_data, iter_dir, save_id, mcore_data)
    mf.pickle_dcp_metadata(md, os.path.join(iter_dir, ".metadata"))
    with open(os.path.join(iter_dir, "metadata.json"), "w") as f:
        json.dump({"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch",
                   "common_backend_version": 1}, f)
    with open(os.path.join(ckpt_dist, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(ITERATION))
    return info


def generate(out, size_gb, formats=("torch", "torch_dist"), dtype="fp32", tp=2, pp=2, seed=1234, log=print,
             sparse=True):
    spec = mf.resolve_spec(choose_spec(size_gb, dtype, tp, pp))
    args = mf.make_args(spec, iteration=ITERATION, save_dir=os.path.join(out, "checkpoint"))
    shapes = [s for _, s, _ in mf.hf_tensor_specs(args, spec.arch)]
    numels = [int(torch.Size(s).numel()) for s in shapes]
    model_bytes = sum(numels) * ELEM[dtype]
    log(f"generating {out}: {model_bytes / 1e9:.2f} GB of {dtype} weights ({spec.layers} layers, hidden {spec.hidden},"
        f" ffn {spec.ffn}, vocab {spec.padded_vocab}), TP {tp} PP {pp}, formats {','.join(formats)}")
    t0 = time.time()
    pool = Pool(max(numels), seed)
    truth = cheap_truth(args, spec.arch, pool)
    meta = {"size_gb": size_gb, "model_bytes": model_bytes, "dtype": dtype, "tp": tp, "pp": pp,
            "optimizer": "sparse zeros" if sparse else "dense",
            "spec": dataclasses.asdict(spec), "formats": {}}
    if "torch" in formats:
        meta["formats"]["torch"] = write_legacy(os.path.join(out, "checkpoint"), truth, args, spec, pool, log, sparse)
        meta["formats"]["torch"]["root"] = "checkpoint"
    if "torch_dist" in formats:
        meta["formats"]["torch_dist"] = write_dist(os.path.join(out, "checkpoint_dist"), truth, args, spec, pool, log, sparse)
        meta["formats"]["torch_dist"]["root"] = "checkpoint_dist"
        meta["formats"]["torch_dist"]["iter_dir"] = os.path.join("checkpoint_dist", mf.iteration_dir_name(ITERATION, False))
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(meta, f, indent=1)
    log(f"generated in {time.time() - t0:.1f} s")
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--size-gb", type=float, required=True, help="model weights in GB (1e9 bytes)")
    ap.add_argument("--format", choices=["torch", "torch_dist", "both"], default="both")
    ap.add_argument("--dtype", choices=sorted(ELEM), default="fp32")
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--pp", type=int, default=2)
    ap.add_argument("--dense-optimizer", action="store_true",
                    help="write optimizer state as data (default: zeros in sparse holes, same sizes and offsets)")
    a = ap.parse_args(argv)
    formats = ("torch", "torch_dist") if a.format == "both" else (a.format,)
    generate(a.out, a.size_gb, formats, a.dtype, a.tp, a.pp, sparse=not a.dense_optimizer)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def generated(work, size_gb, fmt, log=print):
    """WORK/ckpt-<size>GB-<fmt>, generated once and kept (as bench.py --keep keeps them): (folder, its bench.json)."""
    ck = os.path.join(work, f"ckpt-{size_gb:g}GB-{fmt}")
    if not os.path.exists(os.path.join(ck, "bench.json")):
        generate(ck, size_gb, (fmt,), log=log, sparse=True)
        os.sync()
    with open(os.path.join(ck, "bench.json")) as f:
        return ck, json.load(f)
