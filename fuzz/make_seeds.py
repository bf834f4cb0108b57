#!/usr/bin/python3
"""Seed corpora for the libFuzzer targets in fuzz/, generated with the real writers (torch.save, pickle, the
test fixtures), not hand-picked.

Usage: /usr/bin/python3 fuzz/make_seeds.py OUT_DIR

Writes OUT_DIR/<target>/<name> for the targets
  zip_archive         torch.save archives, zipfile archives (stored, deflated, ZIP64, comments, odd layouts)
  pickle              pickle.dumps of checkpoint-like objects at protocols 0-5, and data.pkl of torch.save archives
  torch_archive       torch.save of tensors, views, parameters, Megatron-like state dicts, and a fixture rank file
  dcp_metadata        .metadata of a torch_dist fixture and of tests/fixtures/dcp_samples.py (valid and broken)
  safetensors_header  safetensors files of every dtype, with metadata, padding, empty and scalar tensors
Needs python3-torch and python3-numpy (the Debian /usr/bin/python3); runs in about ten seconds.
"""
import argparse
import collections
import enum
import hashlib
import io
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")
MAX_SEED = 128 * 1024  # the largest -max_len ci/fuzz.sh uses


class Seeds:
    def __init__(self, out):
        self.out = out
        self.count = collections.Counter()

    def add(self, target, name, data):
        if len(data) > MAX_SEED:
            return
        d = os.path.join(self.out, target)
        os.makedirs(d, exist_ok=True)
        tag = hashlib.sha1(data).hexdigest()[:10]
        with open(os.path.join(d, f"{name}-{tag}"), "wb") as f:
            f.write(data)
        self.count[target] += 1


# ------------------------------------------------------------------------------------------------------------
# Objects that look like what Megatron saves
# ------------------------------------------------------------------------------------------------------------

class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Holder:
    """An arbitrary class: pickled as NEWOBJ/REDUCE + BUILD with a dict state."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self):
        self.a = 1
        self.b = [1, 2]


def namespace(**kw):
    ns = argparse.Namespace()
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def megatron_args():
    return namespace(num_layers=2, hidden_size=8, num_attention_heads=2, num_query_groups=1,
                     group_query_attention=False, kv_channels=4, ffn_hidden_size=16, padded_vocab_size=16,
                     tensor_model_parallel_size=1, pipeline_model_parallel_size=1,
                     virtual_pipeline_model_parallel_size=None, swiglu=True, normalization="RMSNorm",
                     add_bias_linear=False, add_qkv_bias=False, qk_layernorm=False,
                     untie_embeddings_and_output_weights=True, bf16=True, fp16=False, params_dtype=torch.bfloat16,
                     save="/ckpt", data_path=["1.0", "/data/a"], lr=3e-4, seq_length=32, iteration=100,
                     path=pathlib.PurePosixPath("/a/b"), split=(969, 30, 1))


def tiny_state_dict(dtype=torch.bfloat16, views=False):
    g = torch.Generator().manual_seed(1)
    sd = collections.OrderedDict()
    shapes = {"embedding.word_embeddings.weight": (4, 3), "decoder.layers.0.self_attention.linear_qkv.weight": (6, 3),
              "decoder.layers.0.mlp.linear_fc1.weight": (4, 3), "decoder.final_layernorm.weight": (3,)}
    if views:
        total = sum(int(np.prod(s)) for s in shapes.values())
        flat = torch.randn(total + 5, generator=g).to(dtype)
        at = 5
        for k, s in shapes.items():
            n = int(np.prod(s))
            sd[k] = flat[at:at + n].view(*s)
            at += n
    else:
        for k, s in shapes.items():
            sd[k] = torch.randn(*s, generator=g).to(dtype)
    sd["decoder.layers.0.self_attention.linear_proj._extra_state"] = io.BytesIO(b"\x80\x02}q\x00.")
    sd._metadata = collections.OrderedDict({"": {"version": 1}})
    return sd


def megatron_checkpoint(views=False, vpp=False):
    ck = {"args": megatron_args(), "checkpoint_version": 3.0, "iteration": 100,
          "rng_state": [{"random_rng_state": (3, tuple(range(5)), None), "np_rng_state": ("MT19937", np.arange(4, dtype=np.uint32), 0, 0, 0.0),
                         "torch_rng_state": torch.zeros(8, dtype=torch.uint8)}],
          "num_floating_point_operations_so_far": 0}
    if vpp:
        ck["model0"] = tiny_state_dict(views=views)
        ck["model1"] = tiny_state_dict(views=views)
    else:
        ck["model"] = tiny_state_dict(views=views)
    ck["optimizer"] = {"optimizer": {"state": {0: {"exp_avg": torch.zeros(3), "step": torch.tensor(1.0)}},
                                     "param_groups": [{"lr": 1e-4, "params": [0]}]}}
    return ck


def tensor_objects():
    """(name, object) pairs that torch.save turns into interesting archives."""
    objs = []
    for dt in [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32, torch.int16,
               torch.int8, torch.uint8, torch.bool, torch.complex64]:
        objs.append((f"tensor_{str(dt).split('.')[-1]}", torch.arange(6).reshape(2, 3).to(dt)))
    base = torch.arange(24, dtype=torch.float32)
    objs += [
        ("scalar", torch.tensor(3.5)),
        ("empty", torch.zeros(0, 4)),
        ("view_offset", base[5:11].view(2, 3)),
        ("transposed", base[:12].view(3, 4).t()),
        ("strided", base[::2]),
        ("expanded", torch.ones(1, 3).expand(4, 3)),
        ("shared", {"a": base[:6], "b": base[6:12], "c": base}),
        ("parameter", torch.nn.Parameter(torch.ones(2, 2))),
        ("parameter_nograd", torch.nn.Parameter(torch.ones(2, 2), requires_grad=False)),
        ("state_dict", tiny_state_dict()),
        ("state_dict_fp32_views", tiny_state_dict(torch.float32, views=True)),
        ("megatron", megatron_checkpoint()),
        ("megatron_views", megatron_checkpoint(views=True)),
        ("megatron_vpp", megatron_checkpoint(vpp=True)),
        ("list_of_tensors", [torch.ones(1), torch.zeros(2, dtype=torch.int8), None, "x", 3]),
        ("size_and_dtype", {"size": torch.Size([2, 3]), "dtype": torch.bfloat16, "layout": torch.strided}),
        ("no_tensors", {"a": 1, "b": [1.5, "s", None, True], "c": (1, 2)}),
        ("bytesio", {"extra": io.BytesIO(b"payload"), "t": torch.ones(2)}),
    ]
    return objs


def pickle_objects():
    """(name, object) pairs for plain pickle.dumps (no torch tensors: those need persistent ids)."""
    shared = [1, 2, 3]
    nested = []
    cur = nested
    for _ in range(30):
        nxt = []
        cur.append(nxt)
        cur = nxt
    return [
        ("scalars", [None, True, False, 0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, -2**31, 2**31, 2**63 - 1,
                     -2**63, 2**64, -2**64 - 1, 10**30, 1.5, -0.0, float("inf"), float("nan")]),
        ("strings", ["", "ascii", "é", "日本", "\U0001F600", "a\nb", "x" * 300, b"", b"\x00\xff", b"y" * 300,
                     bytearray(b"ba")]),
        ("containers", {"t0": (), "t1": (1,), "t2": (1, 2), "t3": (1, 2, 3), "t4": (1, 2, 3, 4), "l": [1, [2, [3]]],
                        "d": {1: "a", "k": {"n": None}}, "s": {1, 2}, "f": frozenset({3}), 5: "int key",
                        (1, 2): "tuple key", None: "none key"}),
        ("shared_refs", {"a": shared, "b": shared, "c": (shared, shared)}),
        ("deep_nesting", nested),
        ("ordered_dict", collections.OrderedDict([("b", 1), ("a", collections.OrderedDict([("x", 2)]))])),
        ("namespace", megatron_args()),
        ("holder", Holder(x=1, y=[1, 2], z={"k": "v"})),
        ("slots", Slotted()),
        ("enum", [Color.RED, Color.BLUE]),
        ("paths", [pathlib.PurePosixPath("/a/b"), pathlib.PosixPath("rel/c")]),
        ("numpy", {"arr": np.arange(4, dtype=np.uint32), "scalar": np.float64(2.5), "dt": np.dtype("float32")}),
        ("rng_state", {"random": (3, tuple(range(10)), None), "np": np.random.RandomState(0).get_state()}),
        ("bytesio", io.BytesIO(b"abc")),
        ("torch_names", {"dtype": torch.bfloat16, "size": torch.Size([2, 3]), "layout": torch.strided}),
        ("complex_set", [{1, "a", (2, 3)}, frozenset(["q"])]),
    ]


# ------------------------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------------------------

def torch_save_bytes(obj, protocol=2):
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_protocol=protocol)
    return buf.getvalue()


def data_pkl(archive):
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        return z.read(name)


def zipfile_bytes(records, compression=zipfile.ZIP_STORED, comment=b"", force_zip64=False, prefix="archive"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression, allowZip64=True) as z:
        for name, data in records:
            info = zipfile.ZipInfo(f"{prefix}/{name}")
            info.compress_type = compression
            with z.open(info, "w", force_zip64=force_zip64) as f:
                f.write(data)
        z.comment = comment
    return buf.getvalue()


def safetensors_bytes(tensors, metadata=None, pad_to=8, order=None):
    """The format by hand: little-endian u64 header length, JSON header, then the data buffer."""
    header, blobs, at = {}, [], 0
    names = order if order is not None else list(tensors)
    for name in names:
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad_to:
        text += b" " * ((pad_to - len(text) % pad_to) % pad_to)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def fixture_checkpoint(tmp, extra):
    out = os.path.join(tmp, "fx" + str(abs(hash(tuple(extra)))))
    cmd = [sys.executable, os.path.join(FIXTURES, "megatron_fixture.py"), "--out", out, "--layers", "1",
           "--hidden", "8", "--heads", "2", "--ffn", "16", "--padded-vocab", "16", "--tp", "1", "--pp", "1"] + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def files_named(root, name):
    for d, _, files in os.walk(root):
        for f in files:
            if f == name:
                yield os.path.join(d, f)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    a = ap.parse_args()
    seeds = Seeds(a.out)

    # --- torch.save archives: torch_archive, zip_archive, and their data.pkl for pickle ---
    for name, obj in tensor_objects():
        for protocol in (2, 4, 5):
            arc = torch_save_bytes(obj, protocol)
            seeds.add("torch_archive", f"{name}_p{protocol}", arc)
            seeds.add("pickle", f"datapkl_{name}_p{protocol}", data_pkl(arc))
            if protocol == 2:
                seeds.add("zip_archive", f"torch_{name}", arc)

    # --- zipfile archives: layouts torch does not write (comments, data descriptors, ZIP64 extras, deflate) ---
    records = [("data.pkl", pickle.dumps({"a": 1}, protocol=2)), ("version", b"3\n"), ("data/0", b"\0" * 16),
               ("byteorder", b"little")]
    seeds.add("zip_archive", "stored", zipfile_bytes(records))
    seeds.add("zip_archive", "deflated", zipfile_bytes(records, compression=zipfile.ZIP_DEFLATED))
    seeds.add("zip_archive", "comment", zipfile_bytes(records, comment=b"a comment"))
    seeds.add("zip_archive", "zip64", zipfile_bytes(records, force_zip64=True))
    seeds.add("zip_archive", "one_entry", zipfile_bytes([("x", b"")]))
    seeds.add("torch_archive", "zipfile_stored", zipfile_bytes(records))
    seeds.add("torch_archive", "zipfile_zip64", zipfile_bytes(records, force_zip64=True))
    seeds.add("torch_archive", "zipfile_bigendian",
              zipfile_bytes([(n, b"big" if n == "byteorder" else d) for n, d in records]))

    # --- plain pickles at every protocol ---
    for name, obj in pickle_objects():
        for protocol in range(0, 6):
            try:
                data = pickle.dumps(obj, protocol=protocol)
            except (pickle.PicklingError, TypeError, AttributeError):
                continue
            seeds.add("pickle", f"{name}_p{protocol}", data)

    # --- a real Megatron fixture: rank file (legacy) and torch_dist .metadata + DCP items ---
    with tempfile.TemporaryDirectory() as tmp:
        fx = fixture_checkpoint(tmp, ["--format", "both", "--dtype", "bf16"])
        for path in files_named(fx, "model_optim_rng.pt"):
            arc = read(path)
            seeds.add("torch_archive", "fixture_rank_file", arc)
            seeds.add("pickle", "fixture_rank_file_datapkl", data_pkl(arc))
            # The same checkpoint with only what the engine reads: a small, realistic archive.
            ck = torch.load(path)
            slim = {k: v for k, v in ck.items() if k in ("args", "checkpoint_version", "iteration") or k.startswith("model")}
            seeds.add("torch_archive", "fixture_rank_file_slim", torch_save_bytes(slim))
        for path in files_named(fx, "common.pt"):
            seeds.add("torch_archive", "fixture_common", read(path))
        for path in files_named(fx, ".metadata"):
            seeds.add("dcp_metadata", "fixture", read(path))
            # A few DCP items: each is a complete torch.save archive (prefix archive/).
            sys.path.insert(0, FIXTURES)
            import dcp_samples  # noqa: E402
            dcp_samples.mf.dcp_classes()  # declares the DCP classes at their real module paths, for pickle.load
            desc = dcp_samples.describe(dcp_samples.load(path))
            items = [(c["path"], c["offset"], c["length"]) for t in desc["tensors"][:6] for c in t["chunks"][:1]]
            items += [(b["path"], b["offset"], b["length"]) for b in desc["bytes"][:4]]
            for i, (rel, off, n) in enumerate(items):
                with open(os.path.join(os.path.dirname(path), rel), "rb") as f:
                    f.seek(off)
                    seeds.add("torch_archive", f"dcp_item{i}", f.read(n))
        fx5 = fixture_checkpoint(tmp, ["--format", "torch_dist", "--dcp-variant", "mcore015", "--dcp-protocol", "5",
                                       "--dcp-keys", "per-layer", "--dcp-props-len", "6"])
        for path in files_named(fx5, ".metadata"):
            seeds.add("dcp_metadata", "fixture_mcore015_p5", read(path))

        # Small hand-built samples of every .metadata variant, valid and broken.
        samples = os.path.join(tmp, "dcp_samples")
        subprocess.run([sys.executable, os.path.join(FIXTURES, "dcp_samples.py"), samples, "--meta-only"], check=True,
                       stdout=subprocess.DEVNULL)
        for path in files_named(samples, ".metadata"):
            seeds.add("dcp_metadata", "sample_" + os.path.basename(os.path.dirname(path)), read(path))

    # --- safetensors ---
    def raw(dtype, shape, fill=1):
        n = int(np.prod(shape)) if shape else 1
        size = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "C64": 8, "F64": 8, "I64": 8, "U64": 8}[dtype]
        return bytes([fill]) * (n * size)

    every = {f"t_{d}": (d, [2, 3], raw(d, [2, 3])) for d in
             ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64",
              "I64", "U64"]}
    seeds.add("safetensors_header", "every_dtype", safetensors_bytes(every))
    seeds.add("safetensors_header", "metadata", safetensors_bytes({"w": ("BF16", [4], raw("BF16", [4]))},
                                                                  metadata={"format": "pt", "k": "v"}))
    seeds.add("safetensors_header", "empty", safetensors_bytes({}))
    seeds.add("safetensors_header", "empty_unpadded", safetensors_bytes({}, pad_to=0))
    seeds.add("safetensors_header", "scalar_and_zero", safetensors_bytes(
        {"s": ("F32", [], raw("F32", [])), "z": ("F16", [0, 5], b""), "e": ("I64", [3, 0], b"")}))
    seeds.add("safetensors_header", "out_of_order", safetensors_bytes(
        {"a": ("F32", [2], raw("F32", [2])), "b": ("U8", [3], raw("U8", [3]))}, order=["b", "a"]))
    seeds.add("safetensors_header", "model_like", safetensors_bytes(
        {"model.embed_tokens.weight": ("BF16", [16, 8], raw("BF16", [16, 8])),
         "model.layers.0.input_layernorm.weight": ("BF16", [8], raw("BF16", [8])),
         "lm_head.weight": ("BF16", [16, 8], raw("BF16", [16, 8]))}, metadata={"format": "pt"}))
    seeds.add("safetensors_header", "big_header", safetensors_bytes(
        {f"layer.{i}.weight": ("F32", [1], raw("F32", [1])) for i in range(200)}))
    bad = safetensors_bytes({"w": ("F32", [2], raw("F32", [2]))})
    seeds.add("safetensors_header", "truncated", bad[:-3])
    seeds.add("safetensors_header", "trailing", bad + b"\0")

    for target in sorted(seeds.count):
        print(f"{target}: {seeds.count[target]} seeds")


if __name__ == "__main__":
    main()
