#!/usr/bin/python3
"""Semantic test: the Megatron checkpoint and the converted HF folder compute the same logits.

    forward_equivalence.py --megatron CKPT/iter_0000100 --hf OUT_DIR [--tokens 16] [--swap none|gate_up|qk]

Two independent fp32 forward passes over the same random token sequence:

  (a) Megatron conventions, computed directly on the per-rank legacy shards (torch.load of every
      mp_rank_*/model_optim_rng.pt): vocab-parallel embedding, per TP rank a fused QKV viewed as
      [seq, ng/t, (G+2)*hd] and split [G*hd, hd, hd] as in get_query_key_value_tensors, qk RMSNorm, rotate-half
      RoPE, causal attention over the local heads (within args.window_size (N, 0) when set: query i sees keys
      i - N .. i), row-parallel linear_proj / linear_fc2 partial sums with the bias added once, per-rank fc1 =
      [gate_r; up_r] halves, SwiGLU; layers placed by the PP/VPP offset rule (§4). Only that recipe: LayerNorm,
      a plain MLP, partial rotary or MoE in the args are refused (exit 2).
  (b) HF Llama / Open-Sci conventions on the OUTPUT folder (config.json + safetensors): q/k/v/o_proj, GQA (query
      head h uses kv head h // (nq/nkv)), q_layernorm/k_layernorm (or q_norm/k_norm), rotate_half RoPE,
      gate/up/down, lm_head or the tied embedding. Mistral / Mixtral sliding windows (config.sliding_window W, not
      null: key j visible from query i iff 0 <= i - j < W). Mixtral / Qwen2-MoE / Qwen3-MoE sparse MLPs as
      transformers computes them (hf_moe), and GPTNeoXForCausalLM (hf_neox_forward: LayerNorm with bias, fused
      per-head query_key_value, rotary on the first int(head_dim * rotary_pct) dims, GeLU MLP, sequential or
      parallel residuals); these are used by tests/interop/check_against_megatron.py, side (a) has none of them
      but the window.

Pass: max|logits_meg - logits_hf| <= 1e-4 * max(1, max|logits_meg|) over the HF vocabulary columns (a trimmed
vocabulary compares the first N columns; tokens are drawn below N). When the HF weights are stored in a narrower
dtype than the checkpoint (e.g. fp32 source, --dtype bf16 output), the Megatron shards are rounded to that dtype
first (elementwise, so shard-wise rounding equals global rounding); --no-round-source turns that off.

Self-check (the test must be able to fail): --swap gate_up exchanges gate_proj/up_proj, --swap qk exchanges the
first ng*hd rows of q_proj with k_proj (the whole tensors for MHA), in memory, in every layer. The script must then
exit 1. (apply_swap on GPT-NeoX: qk exchanges the q and k rows of each head inside query_key_value, gate_up the two
row halves of the non-gated dense_h_to_4h.) For CTest, prefer adding --expect-mismatch (exit 0 only when the mismatch is detected; a crash or
unreadable output still exits 2 and fails the test):
    add_test(NAME fwd_swap_qk COMMAND /usr/bin/python3 forward_equivalence.py
             --megatron FX/checkpoint/iter_0000100 --hf OUT --swap qk --expect-mismatch)
WILL_FAIL TRUE without --expect-mismatch also works, but would count an exit 2 (broken output) as a pass.

Exit status: 0 equivalent, 1 logits differ, 2 unusable input (missing files/tensors, unsupported config).
"""

import argparse
import json
import math
import os
import re
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
from check_hf_output import SafetensorsError, read_safetensors, to_torch  # noqa: E402
from megatron_fixture import dims_from_args, layer_offset, megatron_enums  # noqa: E402

RANK_DIR_RE = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")
LAYER_KEY_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


class InputError(Exception):
    """The inputs cannot be compared at all (exit 2), as opposed to comparing unequal (exit 1)."""


# ---------------------------------------------------------------------------------------------------------------
# Numerics both sides share: plain definitions, not layout conventions, so sharing them hides nothing
# ---------------------------------------------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    """weight * x / sqrt(mean(x^2) + eps) over the last dim, fp32."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def layer_norm(x, weight, bias, eps):
    """weight * (x - mean) / sqrt(var + eps) + bias over the last dim (biased variance), fp32."""
    return torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias, eps)


def causal_attention(q, k, v, visible=None):
    """q, k, v: [heads, seq, hd] -> [heads, seq, hd], softmax(q k^T / sqrt(hd) + mask) v. The mask is causal, or,
    when given, `visible` ([seq, seq] bool, [query i, key j]): each side builds its own from its own convention."""
    s = q.shape[1]
    scores = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(q.shape[-1])
    if visible is None:
        mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    else:
        mask = ~visible
    scores = scores.masked_fill(mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def query_minus_key(s):
    """[seq, seq] int64 matrix of i - j for query position i (row) and key position j (column)."""
    pos = torch.arange(s)
    return pos[:, None] - pos[None, :]


# ---------------------------------------------------------------------------------------------------------------
# (a) Megatron side
# ---------------------------------------------------------------------------------------------------------------

def load_megatron_ranks(iter_dir):
    """{(tp_rank, pp_stage): [chunk state dicts]} and the args of the first file."""
    files, args = {}, None
    megatron_enums()  # args written with Megatron's parser of core 0.16+ hold an AttnBackend member
    for name in sorted(os.listdir(iter_dir)):
        m = RANK_DIR_RE.match(name)
        path = os.path.join(iter_dir, name, "model_optim_rng.pt")
        if not m or not os.path.exists(path):
            continue
        sd = torch.load(path, map_location="cpu")
        if "model" in sd:
            chunks = [sd["model"]]
        else:
            ids = sorted(int(k[5:]) for k in sd if re.fullmatch(r"model\d+", k))
            chunks = [sd[f"model{c}"] for c in ids]
        files[(int(m.group(1)), int(m.group(2) or 0))] = chunks
        args = args or sd["args"]
    if not files:
        raise InputError(f"no mp_rank_*/model_optim_rng.pt under {iter_dir}")
    return files, args


def collect_layers(files, d):
    """{global layer: [per-TP-rank {suffix: tensor}]}, using the §4 offsets, cross-checked against key counts."""
    layers = {}
    for s in range(d.p):
        for c in range(d.v):
            for r in range(d.t):
                if (r, s) not in files:
                    raise InputError(f"missing file for tp rank {r}, pp stage {s}")
                chunk = files[(r, s)][c]
                for key, val in chunk.items():
                    m = LAYER_KEY_RE.match(key)
                    if not m or key.endswith("_extra_state"):
                        continue
                    g = layer_offset(s, c, d) + int(m.group(1))
                    per_rank = layers.setdefault(g, [dict() for _ in range(d.t)])
                    if m.group(2) in per_rank[r]:
                        raise InputError(f"layer {g} {m.group(2)} appears twice for tp rank {r}")
                    per_rank[r][m.group(2)] = val
    if sorted(layers) != list(range(d.L)):
        raise InputError(f"layers found {sorted(layers)} do not cover 0..{d.L - 1}")
    return layers


def find_key(sd, *names):
    for n in names:
        if n in sd:
            return sd[n]
    raise InputError(f"none of {names} present")


def megatron_rope(x, base):
    """Megatron RotaryEmbedding (rotary_interleaved=False): cat(freqs, freqs), x*cos + rotate_half(x)*sin.
    x: [seq, heads, hd]."""
    seq, hd = x.shape[0], x.shape[-1]
    inv_freq = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return x * emb.cos() + torch.cat((-x2, x1), dim=-1) * emb.sin()


def megatron_attention(x, ranks, d, W, visible=None):
    """Self-attention as TP ranks compute it; the row-parallel output is the sum of per-rank partials.
    visible: the [query, key] mask of a sliding window (megatron_window_mask), None for plain causal."""
    seq = x.shape[0]
    ng_local = d.ng // d.t
    out = torch.zeros(seq, d.H)
    for w in ranks:
        mixed = x @ W(w["self_attention.linear_qkv.weight"]).T
        if "self_attention.linear_qkv.bias" in w:
            mixed = mixed + W(w["self_attention.linear_qkv.bias"])
        mixed = mixed.view(seq, ng_local, (d.G + 2) * d.hd)
        q, k, v = torch.split(mixed, [d.G * d.hd, d.hd, d.hd], dim=-1)
        q = q.reshape(seq, ng_local * d.G, d.hd)
        if d.qk_norm:
            q = rms_norm(q, W(w["self_attention.q_layernorm.weight"]), d.eps)
            k = rms_norm(k, W(w["self_attention.k_layernorm.weight"]), d.eps)
        q, k = megatron_rope(q, d.rope_base), megatron_rope(k, d.rope_base)
        k = k.repeat_interleave(d.G, dim=1)  # local query head j belongs to local group j // G
        v = v.repeat_interleave(d.G, dim=1)
        ctx = causal_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), visible).transpose(0, 1)
        out = out + ctx.reshape(seq, -1) @ W(w["self_attention.linear_proj.weight"]).T
    if "self_attention.linear_proj.bias" in ranks[0]:
        out = out + W(ranks[0]["self_attention.linear_proj.bias"])  # replicated: added once after the all-reduce
    return out


def megatron_mlp(x, ranks, W):
    """SwiGLU MLP per TP rank: fc1_r output halves are [gate_r | up_r]; fc2 partials summed, bias once."""
    out = 0
    for w in ranks:
        h = x @ W(w["mlp.linear_fc1.weight"]).T
        if "mlp.linear_fc1.bias" in w:
            h = h + W(w["mlp.linear_fc1.bias"])
        gate, up = torch.chunk(h, 2, dim=-1)
        out = out + (torch.nn.functional.silu(gate) * up) @ W(w["mlp.linear_fc2.weight"]).T
    if "mlp.linear_fc2.bias" in ranks[0]:
        out = out + W(ranks[0]["mlp.linear_fc2.bias"])
    return out


def vocab_parallel_embedding(tokens, shards, W):
    """Each rank looks up the tokens in its vocab range and contributes zeros elsewhere; results are summed."""
    out, start = 0, 0
    for shard in shards:
        rows = shard.shape[0]
        outside = (tokens < start) | (tokens >= start + rows)
        local = torch.where(outside, torch.zeros_like(tokens), tokens - start)
        emb = W(shard)[local]
        out = out + emb.masked_fill(outside[:, None], 0.0)
        start += rows
    return out


def megatron_window_mask(args, seq):
    """Megatron's window_size (left, right) lets query i see keys i - left .. i + right; causal, right is 0. None
    when the model has no window."""
    window = getattr(args, "window_size", None)
    if window is None:
        return None
    left, right = window
    if right != 0:
        raise InputError(f"window_size {tuple(window)}: only (N, 0) is supported by this test")
    dist = query_minus_key(seq)
    return (dist >= 0) & (dist <= left)


def check_side_a_supported(args):
    """Side (a) is the Llama recipe (RMSNorm, SwiGLU, full rotary, no MoE); refuse what it would get wrong."""
    unsupported = []
    if getattr(args, "normalization", "RMSNorm") != "RMSNorm":
        unsupported.append(f"normalization {args.normalization}")
    if not getattr(args, "swiglu", True):
        unsupported.append("a non-gated MLP")
    if float(getattr(args, "rotary_percent", 1.0)) != 1.0:
        unsupported.append(f"rotary_percent {args.rotary_percent}")
    if getattr(args, "num_experts", None):
        unsupported.append("MoE")
    if unsupported:
        raise InputError("the Megatron-side forward does not model " + ", ".join(unsupported))


def megatron_forward(files, args, tokens, W):
    check_side_a_supported(args)
    d = dims_from_args(args)
    visible = megatron_window_mask(args, tokens.shape[0])
    last = files[(0, d.p - 1)][d.v - 1]
    emb_shards = [files[(r, 0)][0]["embedding.word_embeddings.weight"] for r in range(d.t)]
    x = vocab_parallel_embedding(tokens, emb_shards, W)
    layers = collect_layers(files, d)
    for i in range(d.L):
        ranks = layers[i]
        ln1 = find_key(ranks[0], "self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight")
        x = x + megatron_attention(rms_norm(x, W(ln1), d.eps), ranks, d, W, visible)
        ln2 = find_key(ranks[0], "mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight")
        x = x + megatron_mlp(rms_norm(x, W(ln2), d.eps), ranks, W)
    x = rms_norm(x, W(find_key(last, "decoder.final_layernorm.weight", "decoder.final_norm.weight")), d.eps)
    if d.tied:
        heads = emb_shards
    else:
        heads = [files[(r, d.p - 1)][d.v - 1]["output_layer.weight"] for r in range(d.t)]
    return torch.cat([x @ W(h).T for h in heads], dim=-1)  # vocab-parallel logits, gathered


# ---------------------------------------------------------------------------------------------------------------
# (b) HF side
# ---------------------------------------------------------------------------------------------------------------

def load_hf(out_dir):
    """config dict and {name: tensor in its stored dtype} from config.json and every *.safetensors file."""
    with open(os.path.join(out_dir, "config.json")) as f:
        cfg = json.load(f)
    tensors = {}
    files = sorted(f for f in os.listdir(out_dir) if f.endswith(".safetensors"))
    if not files:
        raise InputError(f"no .safetensors files in {out_dir}")
    for fname in files:
        for name, (dtype, shape, data) in read_safetensors(os.path.join(out_dir, fname)).items():
            tensors[name] = to_torch(dtype, shape, data)
    return cfg, tensors


def hf_rotary(x, theta):
    """HF Llama rotary embedding: inv_freq over even dims, emb = cat(freqs, freqs), rotate_half. x: [heads, seq, hd]."""
    hd, seq = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.arange(seq, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    half = hd // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * emb.cos() + rotated * emb.sin()


def hf_window_mask(cfg, seq):
    """The [query, key] mask of HF's sliding window, None for plain causal attention. Mistral and Mixtral window
    every layer when config.sliding_window is not null: key j is visible from query i iff 0 <= i - j <
    sliding_window (the window counts the query itself)."""
    family = cfg.get("model_type")
    if family in ("mistral", "mixtral"):
        window = cfg.get("sliding_window")
        if window is None:
            return None
        if not isinstance(window, int) or window < 1:
            raise InputError(f"config.json sliding_window {window!r} is not a positive integer")
        dist = query_minus_key(seq)
        return (dist >= 0) & (dist < window)
    if cfg.get("use_sliding_window"):  # Qwen families: windows on some layers only (max_window_layers)
        raise InputError(f"{family} with use_sliding_window is not supported by this test")
    return None


def hf_forward(cfg, T, tokens):
    if cfg.get("rope_scaling") is not None:
        raise InputError("rope_scaling is not supported by this test")
    if cfg.get("model_type") == "gpt_neox":
        return hf_neox_forward(cfg, T, tokens)
    f = lambda n: T[n].float()
    opt = lambda n: T[n].float() if n in T else None
    nq, nkv, H = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    hd = cfg.get("head_dim") or H // nq
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    if cfg.get("model_type") in ("qwen3", "qwen3_moe"):
        qk_norm = ("q_norm", "k_norm")  # Qwen3 always has them
    elif cfg.get("qk_layernorm"):
        qk_norm = ("q_layernorm", "k_layernorm")  # Open-Sci: driven by config.qk_layernorm
    else:
        qk_norm = None
    x = f("model.embed_tokens.weight")[tokens]
    seq = x.shape[0]
    visible = hf_window_mask(cfg, seq)

    def linear(h, prefix):
        y = h @ f(prefix + ".weight").T
        b = opt(prefix + ".bias")
        return y if b is None else y + b

    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, f(p + "input_layernorm.weight"), eps)
        q = linear(h, p + "self_attn.q_proj").view(seq, nq, hd).transpose(0, 1)
        k = linear(h, p + "self_attn.k_proj").view(seq, nkv, hd).transpose(0, 1)
        v = linear(h, p + "self_attn.v_proj").view(seq, nkv, hd).transpose(0, 1)
        if qk_norm is not None:
            q = rms_norm(q, f(p + f"self_attn.{qk_norm[0]}.weight"), eps)
            k = rms_norm(k, f(p + f"self_attn.{qk_norm[1]}.weight"), eps)
        q, k = hf_rotary(q, theta), hf_rotary(k, theta)
        rep = nq // nkv
        k = k[:, None].expand(nkv, rep, seq, hd).reshape(nq, seq, hd)  # repeat_kv: head h -> kv head h // rep
        v = v[:, None].expand(nkv, rep, seq, hd).reshape(nq, seq, hd)
        attn = causal_attention(q, k, v, visible).transpose(0, 1).reshape(seq, nq * hd)
        x = x + linear(attn, p + "self_attn.o_proj")
        h = rms_norm(x, f(p + "post_attention_layernorm.weight"), eps)
        if is_sparse_layer(cfg, i):
            x = x + hf_moe(cfg, h, p, linear)
            continue
        mlp = torch.nn.functional.silu(linear(h, p + "mlp.gate_proj")) * linear(h, p + "mlp.up_proj")
        x = x + linear(mlp, p + "mlp.down_proj")
    x = rms_norm(x, f("model.norm.weight"), eps)
    head = f("model.embed_tokens.weight") if cfg.get("tie_word_embeddings", True) else f("lm_head.weight")
    return x @ head.T


# HF's ACT2FN names a GPT-NeoX config may carry: "gelu" is the exact (erf) GeLU, the others its tanh approximation.
NEOX_ACTIVATIONS = {
    "gelu": lambda x: torch.nn.functional.gelu(x),
    "gelu_new": lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3)))),
    "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
}


def hf_neox_forward(cfg, T, tokens):
    """GPTNeoXForCausalLM: LayerNorm (weight and bias, layer_norm_eps), a fused query_key_value whose rows are per
    head [q_h; k_h; v_h], rotary (rotate_half, base rotary_emb_base) on the first int(head_dim * rotary_pct) dims of
    each head with the rest passed through, dense, a plain MLP act(dense_h_to_4h) -> dense_4h_to_h, residuals one
    after the other or in parallel (use_parallel_residual), final_layer_norm, embed_out (or the tied embed_in).
    Defaults are GPTNeoXConfig's where a key is absent."""
    f = lambda n: T[n].float()
    opt = lambda n: T[n].float() if n in T else None
    nh, H = cfg["num_attention_heads"], cfg["hidden_size"]
    if H % nh:
        raise InputError(f"hidden_size {H} is not a multiple of num_attention_heads {nh}")
    hd = H // nh
    eps = cfg.get("layer_norm_eps", 1e-5)
    base = cfg.get("rotary_emb_base", cfg.get("rope_theta", 10000))
    rot = int(hd * cfg.get("rotary_pct", 0.25))
    act = NEOX_ACTIVATIONS.get(cfg.get("hidden_act", "gelu"))
    if act is None:
        raise InputError(f"GPT-NeoX hidden_act {cfg.get('hidden_act')!r} is not supported by this test")
    if rot % 2:
        raise InputError(f"rotary dims {rot} (head_dim {hd} * rotary_pct) are odd")
    parallel = cfg.get("use_parallel_residual", True)
    x = f("gpt_neox.embed_in.weight")[tokens]
    seq = x.shape[0]

    def linear(h, prefix):
        y = h @ f(prefix + ".weight").T
        b = opt(prefix + ".bias")
        return y if b is None else y + b

    def norm(h, prefix):
        return layer_norm(h, f(prefix + ".weight"), opt(prefix + ".bias"), eps)

    def rotary(t):  # [heads, seq, hd]: rotate the first rot dims, pass the rest through
        if rot == 0:
            return t
        return torch.cat((hf_rotary(t[..., :rot], base), t[..., rot:]), dim=-1)

    for i in range(cfg["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        qkv = linear(norm(x, p + "input_layernorm"), p + "attention.query_key_value")
        qkv = qkv.view(seq, nh, 3 * hd).transpose(0, 1)  # [heads, seq, 3 * hd]
        q, k, v = qkv[..., :hd], qkv[..., hd:2 * hd], qkv[..., 2 * hd:]
        attn = causal_attention(rotary(q), rotary(k), v).transpose(0, 1).reshape(seq, H)
        attn = linear(attn, p + "attention.dense")

        def mlp(h):
            return linear(act(linear(norm(h, p + "post_attention_layernorm"), p + "mlp.dense_h_to_4h")),
                          p + "mlp.dense_4h_to_h")

        if parallel:  # x + attn(ln1(x)) + mlp(ln2(x))
            x = x + attn + mlp(x)
        else:  # x + attn(ln1(x)), then + mlp(ln2(.))
            x = x + attn
            x = x + mlp(x)
    x = norm(x, "gpt_neox.final_layer_norm")
    tied = cfg.get("tie_word_embeddings", False)  # GPTNeoXConfig's default: untied
    head = f("gpt_neox.embed_in.weight") if tied else f("embed_out.weight")
    return x @ head.T


# HF MoE families: (block prefix, number-of-experts field, expert gate/up/down names).
MOE_FAMILIES = {
    "mixtral": ("block_sparse_moe", "num_local_experts", ("w1", "w3", "w2")),
    "qwen2_moe": ("mlp", "num_experts", ("gate_proj", "up_proj", "down_proj")),
    "qwen3_moe": ("mlp", "num_experts", ("gate_proj", "up_proj", "down_proj")),
}


def is_sparse_layer(cfg, i):
    family = MOE_FAMILIES.get(cfg.get("model_type"))
    if family is None:
        return False
    if cfg.get("model_type") == "mixtral":
        return True  # every layer (its sliding_window, if any, is hf_window_mask's)
    # Qwen-MoE: a sparse block unless the layer is in mlp_only_layers or off the decoder_sparse_step grid.
    return (i not in (cfg.get("mlp_only_layers") or []) and cfg.get(family[1], 0) > 0
            and (i + 1) % cfg.get("decoder_sparse_step", 1) == 0)


def hf_moe(cfg, h, p, linear):
    """The sparse MoE block as transformers computes it: router logits over all experts, softmax (fp32), top-k
    (Mixtral always renormalises the k weights, Qwen-MoE when norm_topk_prob), the weighted sum of the chosen
    experts' SwiGLU outputs; Qwen2-MoE adds its shared expert times sigmoid(shared_expert_gate)."""
    block, count, (gate, up, down) = MOE_FAMILIES[cfg["model_type"]]
    prefix = f"{p}{block}."
    probs = torch.softmax(linear(h, prefix + "gate"), dim=-1)
    top, index = torch.topk(probs, cfg["num_experts_per_tok"], dim=-1)
    if cfg["model_type"] == "mixtral" or cfg.get("norm_topk_prob", False):
        top = top / top.sum(dim=-1, keepdim=True)
    def expert(e):
        name = f"{prefix}experts.{e}."
        return linear(torch.nn.functional.silu(linear(h, name + gate)) * linear(h, name + up), name + down)

    experts = torch.stack([expert(e) for e in range(cfg[count])])  # [E, seq, H]: every expert, then the chosen
    tokens = torch.arange(h.shape[0])
    out = sum(top[:, k, None] * experts[index[:, k], tokens] for k in range(index.shape[1]))
    if cfg["model_type"] == "qwen2_moe":
        shared = f"{p}mlp.shared_expert."
        y = linear(torch.nn.functional.silu(linear(h, shared + "gate_proj")) * linear(h, shared + "up_proj"),
                   shared + "down_proj")
        out = out + torch.sigmoid(linear(h, f"{p}mlp.shared_expert_gate")) * y
    return out


def apply_swap(cfg, T, what):
    """Deliberately corrupt the HF weights (in memory) so the test can prove it detects layout mistakes."""
    if what == "none":
        return
    if cfg.get("model_type") == "gpt_neox":
        swap_neox(cfg, T, what)
        return
    nq = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nq
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        if cfg.get("model_type") in MOE_FAMILIES:
            swap_moe(cfg, T, p, what)
        for suffix in (".weight", ".bias"):
            if what == "gate_up" and p + "mlp.gate_proj" + suffix in T:
                a, b = p + "mlp.gate_proj" + suffix, p + "mlp.up_proj" + suffix
                T[a], T[b] = T[b], T[a]
            if what == "qk" and p + "self_attn.q_proj" + suffix in T:
                qn, kn = p + "self_attn.q_proj" + suffix, p + "self_attn.k_proj" + suffix
                q, k, rows = T[qn].clone(), T[kn].clone(), nkv * hd
                q[:rows], k[:rows] = T[kn][:rows], T[qn][:rows]
                T[qn], T[kn] = q, k


def swap_neox(cfg, T, what):
    """GPT-NeoX has no separate q/k or gate/up tensors. qk: exchange the q and k rows of every head inside the fused
    query_key_value (per head [q_h; k_h; v_h]); gate_up: exchange the two row halves of the non-gated
    mlp.dense_h_to_4h, what treating it as a gated [gate; up] fc1 would do. Weight and bias alike."""
    nh = cfg["num_attention_heads"]
    hd = cfg["hidden_size"] // nh
    for i in range(cfg["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        for suffix in (".weight", ".bias"):
            if what == "qk" and p + "attention.query_key_value" + suffix in T:
                name = p + "attention.query_key_value" + suffix
                t = T[name]
                heads = t.reshape(nh, 3, hd, *t.shape[1:])
                T[name] = torch.stack((heads[:, 1], heads[:, 0], heads[:, 2]), dim=1).reshape(t.shape).contiguous()
            if what == "gate_up" and p + "mlp.dense_h_to_4h" + suffix in T:
                name = p + "mlp.dense_h_to_4h" + suffix
                t = T[name]
                half = t.shape[0] // 2
                T[name] = torch.cat((t[half:], t[:half])).contiguous()


def swap_moe(cfg, T, p, what):
    """gate_up: exchange gate and up in every expert and in the shared expert; experts: exchange the first and
    the last expert (what a wrong global expert index would do)."""
    block, count, (gate, up, down) = MOE_FAMILIES[cfg["model_type"]]
    prefix, n = f"{p}{block}.experts.", cfg[count]
    pairs = []
    if what == "gate_up":
        pairs = [(f"{prefix}{e}.{gate}.weight", f"{prefix}{e}.{up}.weight") for e in range(n)]
        pairs.append((f"{p}mlp.shared_expert.gate_proj.weight", f"{p}mlp.shared_expert.up_proj.weight"))
    elif what == "experts":
        pairs = [(f"{prefix}0.{w}.weight", f"{prefix}{n - 1}.{w}.weight") for w in (gate, up, down)]
    for a, b in pairs:
        if a in T and b in T:
            T[a], T[b] = T[b], T[a]


# ---------------------------------------------------------------------------------------------------------------

def run(a):
    files, args = load_megatron_ranks(a.megatron)
    check_side_a_supported(args)
    cfg, T = load_hf(a.hf)
    apply_swap(cfg, T, a.swap)
    # Round the Megatron weights through the HF storage dtype: a no-op when equal or wider, exactly the
    # converter's cast when narrower (casting is elementwise, so per-shard rounding equals global rounding).
    hf_dtype = T["model.embed_tokens.weight"].dtype
    round_to = None if (a.no_round_source or hf_dtype == args.params_dtype) else hf_dtype
    W = (lambda t: t.to(round_to).float()) if round_to is not None else (lambda t: t.float())

    v_hf = T["model.embed_tokens.weight"].shape[0]
    vp = args.padded_vocab_size
    if v_hf > vp:
        raise InputError(f"HF vocabulary {v_hf} is larger than the padded Megatron vocabulary {vp}")
    gen = torch.Generator().manual_seed(a.seed)
    tokens = torch.randint(0, v_hf, (a.tokens,), generator=gen)

    with torch.no_grad():
        meg = megatron_forward(files, args, tokens, W)[:, :v_hf]
        hf = hf_forward(cfg, T, tokens)
    if hf.shape != meg.shape:
        print(f"FAIL: logits shapes differ: megatron {tuple(meg.shape)}, hf {tuple(hf.shape)}")
        return 1
    diff = (meg - hf).abs().max().item()
    scale = max(1.0, meg.abs().max().item())
    tol = 1e-4 * scale
    rounding = f", Megatron weights rounded to {hf_dtype}" if round_to is not None else ""
    verdict = "OK" if diff <= tol else "FAIL"
    print(f"{verdict}: max|logits_meg - logits_hf| = {diff:.3e} (tolerance {tol:.3e}, max|logits| "
          f"{meg.abs().max().item():.3e}, {a.tokens} tokens, vocab {v_hf}, swap={a.swap}{rounding})")
    equal = diff <= tol
    if a.expect_mismatch:
        print("expected a mismatch: " + ("NOT detected -> exit 1" if equal else "detected -> exit 0"))
        return 1 if equal else 0
    return 0 if equal else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description="Megatron-vs-HF logits equivalence (semantic conversion test).",
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megatron", required=True, help="iteration folder holding mp_rank_* (legacy torch format)")
    ap.add_argument("--hf", required=True, help="converted HF folder (config.json + safetensors)")
    ap.add_argument("--tokens", type=int, default=16, help="sequence length (>= 2)")
    ap.add_argument("--seed", type=int, default=0, help="token sampling seed")
    ap.add_argument("--swap", choices=["none", "gate_up", "qk"], default="none",
                    help="corrupt the HF weights on purpose; the script must then exit 1 (use WILL_FAIL in CTest)")
    ap.add_argument("--expect-mismatch", action="store_true",
                    help="invert the verdict: exit 0 only when the logits differ (for --swap runs without "
                         "WILL_FAIL; input errors still exit 2)")
    ap.add_argument("--no-round-source", action="store_true",
                    help="do not round Megatron weights to a narrower HF storage dtype before comparing")
    a = ap.parse_args(argv)
    try:
        return run(a)
    except (InputError, SafetensorsError, KeyError, FileNotFoundError) as e:
        print(f"ERROR: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
