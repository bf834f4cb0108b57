#!/usr/bin/python3
"""The conversion a user has today, for the benchmark: torch.load the Megatron rank files, reassemble the
Hugging Face tensors in torch, write safetensors with a plain Python writer.

  python_baseline.py --input CKPT_ROOT --output HF_DIR [--dtype source|bf16|fp16|fp32]

Legacy `torch` checkpoints: every `mp_rank_*/model_optim_rng.pt` of the latest iteration is `torch.load`ed whole
(as conversion scripts do; the distributed optimizer's `distrib_optim.pt` is not needed and not loaded).
`torch_dist` checkpoints: `.metadata` is unpickled and every MODEL chunk is read from its data file and
`torch.load`ed (what torch.distributed.checkpoint does for a model-only state dict; optimizer items are skipped).
Then: TP shards concatenated, fused QKV split per query group, SwiGLU fc1 split into gate/up, PP stages renumbered,
optionally cast, and written in huggingface_hub's shard split with the reference file layout
(tests/fixtures/write_reference_hf.py), so the output is byte-identical to the engine's and can be `cmp`ed.
Supports what the benchmark generates: Llama / Open-Sci layouts, TP x PP, no VPP.
"""

import argparse
import collections
import io
import json
import os
import pickle
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
import megatron_fixture as mf  # noqa: E402
import write_reference_hf as ref  # noqa: E402


def iteration_dir(root):
    tracker = os.path.join(root, "latest_checkpointed_iteration.txt")
    if not os.path.exists(tracker):
        return root
    with open(tracker) as f:
        it = f.read().strip()
    return os.path.join(root, "release" if it == "release" else f"iter_{int(it):07d}")


def arch_of(args):
    return "opensci" if getattr(args, "qk_layernorm", False) else "llama"


def split_qkv(fused, d):
    """Fused [ng * (G+2) * hd, ...] -> q, k, v (Megatron's per-group layout)."""
    rest = fused.shape[1:]
    g = fused.reshape((d.ng, (d.G + 2) * d.hd) + tuple(rest))
    q = g[:, :d.G * d.hd].reshape((d.nq * d.hd,) + tuple(rest))
    k = g[:, d.G * d.hd:(d.G + 1) * d.hd].reshape((d.ng * d.hd,) + tuple(rest))
    v = g[:, (d.G + 1) * d.hd:].reshape((d.ng * d.hd,) + tuple(rest))
    return q, k, v


def layer_to_hf(out, i, get, d):
    """get(suffix) -> the GLOBAL Megatron tensor of layer i (fc1 as [gate; up])."""
    p = f"model.layers.{i}."
    out[p + "self_attn.q_proj.weight"], out[p + "self_attn.k_proj.weight"], out[p + "self_attn.v_proj.weight"] = \
        split_qkv(get("self_attention.linear_qkv.weight"), d)
    if d.qkv_bias:
        out[p + "self_attn.q_proj.bias"], out[p + "self_attn.k_proj.bias"], out[p + "self_attn.v_proj.bias"] = \
            split_qkv(get("self_attention.linear_qkv.bias"), d)
    out[p + "self_attn.o_proj.weight"] = get("self_attention.linear_proj.weight")
    if d.bias:
        out[p + "self_attn.o_proj.bias"] = get("self_attention.linear_proj.bias")
    if d.qk_norm:
        out[p + "self_attn.q_layernorm.weight"] = get("self_attention.q_layernorm.weight")
        out[p + "self_attn.k_layernorm.weight"] = get("self_attention.k_layernorm.weight")
    fc1 = get("mlp.linear_fc1.weight")
    out[p + "mlp.gate_proj.weight"], out[p + "mlp.up_proj.weight"] = fc1[:d.F], fc1[d.F:]
    if d.bias:
        b = get("mlp.linear_fc1.bias")
        out[p + "mlp.gate_proj.bias"], out[p + "mlp.up_proj.bias"] = b[:d.F], b[d.F:]
    out[p + "mlp.down_proj.weight"] = get("mlp.linear_fc2.weight")
    if d.bias:
        out[p + "mlp.down_proj.bias"] = get("mlp.linear_fc2.bias")
    out[p + "input_layernorm.weight"] = get("self_attention.linear_qkv.layer_norm_weight")
    out[p + "post_attention_layernorm.weight"] = get("mlp.linear_fc1.layer_norm_weight")


#: TP concatenation axis of per-layer tensors in the legacy files; "glu": [gate_r; up_r]; absent: replicated.
LEGACY_TP = {"self_attention.linear_qkv.weight": 0, "self_attention.linear_qkv.bias": 0,
             "self_attention.linear_proj.weight": 1, "mlp.linear_fc2.weight": 1,
             "mlp.linear_fc1.weight": "glu", "mlp.linear_fc1.bias": "glu"}
LOCAL_NAMES = {"self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
               "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight"}


def convert_legacy(it_dir):
    ranks = sorted(n for n in os.listdir(it_dir) if n.startswith("mp_rank_"))
    states = {}
    for n in ranks:  # what conversion scripts do: load every rank file whole
        parts = n.split("_")
        r, s = int(parts[2]), (int(parts[3]) if len(parts) > 3 else 0)
        states[(r, s)] = torch.load(os.path.join(it_dir, n, "model_optim_rng.pt"), map_location="cpu")
    args = states[(0, 0)]["args"]
    d = mf.dims_from_args(args)
    if d.v > 1:
        raise SystemExit("python_baseline: VPP is not supported")
    model = {k: v["model"] for k, v in states.items()}
    per_stage = d.L // d.p

    def cat(key, s, axis):
        return torch.cat([model[(r, s)][key] for r in range(d.t)], axis)

    out = collections.OrderedDict()
    out["model.embed_tokens.weight"] = cat("embedding.word_embeddings.weight", 0, 0)
    for s in range(d.p):
        for local in range(per_stage):
            pre = f"decoder.layers.{local}."

            def get(suffix, s=s, pre=pre):
                key = pre + suffix
                if key not in model[(0, s)] and suffix in LOCAL_NAMES:
                    key = pre + LOCAL_NAMES[suffix]
                axis = LEGACY_TP.get(suffix)
                if axis is None:
                    return model[(0, s)][key]
                if axis == "glu":
                    halves = [torch.chunk(model[(r, s)][key], 2, 0) for r in range(d.t)]
                    return torch.cat([h[0] for h in halves] + [h[1] for h in halves], 0)
                return cat(key, s, axis)

            layer_to_hf(out, s * per_stage + local, get, d)
    out["model.norm.weight"] = model[(0, d.p - 1)]["decoder.final_layernorm.weight"]
    if not d.tied:
        out["lm_head.weight"] = cat("output_layer.weight", d.p - 1, 0)
    return args, out


def convert_dist(it_dir):
    mf.dcp_classes()  # the DCP / Megatron classes .metadata refers to
    with open(os.path.join(it_dir, ".metadata"), "rb") as f:
        md = pickle.load(f)
    common = torch.load(os.path.join(it_dir, "common.pt"), map_location="cpu")
    args = common["args"]
    d = mf.dims_from_args(args)
    where = {}
    for idx, info in md.storage_data.items():
        off = getattr(idx, "offset", None)
        where[(idx.fqn, None if off is None else tuple(off))] = info
    files = {}
    glob = {}
    for fqn, meta in md.state_dict_metadata.items():
        if fqn.startswith("optimizer.") or type(meta).__name__ == "BytesStorageMetadata":
            continue
        t = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
        for ch in meta.chunks:
            info = where[(fqn, tuple(ch.offsets))]
            f = files.get(info.relative_path)
            if f is None:
                f = files[info.relative_path] = open(os.path.join(it_dir, info.relative_path), "rb")
            f.seek(info.offset)
            part = torch.load(io.BytesIO(f.read(info.length)), map_location="cpu")
            region = tuple(slice(o, o + n) for o, n in zip(ch.offsets, ch.sizes))
            t[region] = part.reshape(tuple(ch.sizes))
        glob[fqn] = t
    for f in files.values():
        f.close()
    out = collections.OrderedDict()
    out["model.embed_tokens.weight"] = glob["embedding.word_embeddings.weight"]
    for i in range(d.L):
        def get(suffix, i=i):
            if "decoder.layers." + suffix in glob:
                return glob["decoder.layers." + suffix][i]
            return glob[f"decoder.layers.{i}.{suffix}"]

        layer_to_hf(out, i, get, d)
    out["model.norm.weight"] = glob["decoder.final_layernorm.weight"]
    if not d.tied:
        out["lm_head.weight"] = glob["output_layer.weight"]
    return args, out


def write_safetensors(path, tensors):
    """Streaming version of write_reference_hf.serialize_safetensors (same header and order, tensors written one
    by one instead of joined in memory)."""
    order = sorted(tensors, key=lambda n: (-ref.DTYPE_ORDER.index(ref.TORCH_TO_ST[tensors[n].dtype]), n.encode()))
    header = collections.OrderedDict([("__metadata__", {"format": "pt"})])
    off = 0
    for name in order:
        t = tensors[name]
        n = t.numel() * t.element_size()
        header[name] = collections.OrderedDict([("dtype", ref.TORCH_TO_ST[t.dtype]), ("shape", list(t.shape)),
                                                ("data_offsets", [off, off + n])])
        off += n
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in order:
            t = tensors[name].contiguous().reshape(-1)
            if t.numel():
                f.write(memoryview(t.view(torch.uint8).numpy()))


def write_hf(state_dict, config, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shards = ref.split_into_shards(state_dict, ref.MAX_SHARD_SIZE)
    names = ref.shard_file_names(len(shards))
    weight_map = {}
    for fname, members in zip(names, shards):
        write_safetensors(os.path.join(out_dir, fname), {n: state_dict[n] for n in members})
        weight_map.update({n: fname for n in members})
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in state_dict.values())
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            f.write(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2,
                               sort_keys=True) + "\n")
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="checkpoint root (with latest_checkpointed_iteration.txt) or iteration dir")
    ap.add_argument("--output", required=True)
    ap.add_argument("--dtype", choices=sorted(ref.CAST), default="source")
    a = ap.parse_args(argv)
    it_dir = iteration_dir(a.input)
    if os.path.exists(os.path.join(it_dir, ".metadata")):
        args, hf = convert_dist(it_dir)
    else:
        args, hf = convert_legacy(it_dir)
    arch = arch_of(args)
    order = [name for name, _, _ in mf.hf_tensor_specs(args, arch)]
    if sorted(order) != sorted(hf):
        raise SystemExit(f"python_baseline: tensor names differ from {arch}: {sorted(set(order) ^ set(hf))[:5]}")
    hf = collections.OrderedDict((n, hf[n]) for n in order)
    sd, config = ref.apply_output_options(hf, mf.expected_hf_config(args, arch), a.dtype)
    names = write_hf(sd, config, a.output)
    print(f"python_baseline: wrote {a.output}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
