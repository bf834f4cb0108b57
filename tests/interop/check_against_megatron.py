#!/usr/bin/python3
"""Check a converted HF folder against what real megatron-core wrote and computed (no transformers needed).

    check_against_megatron.py --hf OUT --generated GEN [--tolerance 1e-4] [--swap qk|gate_up|experts --expect-mismatch]
                              [--report FILE.json]

GEN is a folder made by megatron_writer.py. Mixture-of-Experts outputs (config.json model_type mixtral, qwen3_moe,
qwen2_moe) are mapped with the names Mixtral-8x7B, Qwen3-30B-A3B and Qwen1.5-MoE-A2.7B publish, and the forward runs
their sparse blocks as transformers does (forward_equivalence.hf_moe). GPT-NeoX outputs (model_type gpt_neox) are
mapped with GPTNeoXForCausalLM's names (gpt_neox.embed_in, gpt_neox.layers.L.attention.query_key_value with per
head [q; k; v] rows, dense, mlp.dense_h_to_4h / dense_4h_to_h, LayerNorm weights and biases, final_layer_norm,
embed_out) and run by forward_equivalence.hf_neox_forward; Mistral / Mixtral sliding windows by hf_window_mask.
Before check 1, config.json's sliding_window (Megatron's window_size (N, 0) is HF's N + 1, the query counted) and
GPT-NeoX's rotary_pct are compared with Megatron's settings. Three checks:
  1. bit-exact tensors: the HF tensors are derived here from GEN/truth/global.safetensors (Megatron's own global
     state dict, Megatron names) with a mapping written independently of the engine; the output must hold exactly
     that set of names, each with the same dtype, shape and bytes;
  2. logits: the project's HF-convention forward (tests/e2e/forward_equivalence.py, float32) on the output over
     GEN/reference/input_ids.npy, max abs difference to Megatron's logits_fp32.npy <= --tolerance;
  3. greedy: 4 greedy steps from the prompt with that forward equal Megatron's tokens (greedy.json).
--swap qk|gate_up|experts corrupts the loaded weights in memory (forward_equivalence.apply_swap; experts: the first
and the last expert of every MoE layer exchanged) and skips check 1 and the config comparison, since the logits
must catch it on their own; with --expect-mismatch the exit status is 0 only when they do. GPT-NeoX has no separate
q/k or gate/up tensors: there qk exchanges the q and k rows of every head inside query_key_value (weight and bias),
and gate_up exchanges the two row halves of the non-gated mlp.dense_h_to_4h (weight and bias), the slip of reading
a plain fc1 as a gated [gate; up] one.
Exit status: 0 pass, 1 mismatch, 2 unusable input.
"""

import argparse
import json
import os
import re
import sys

import numpy
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from check_hf_output import (SafetensorsError, TORCH_TO_ST, first_difference, read_safetensors,  # noqa: E402
                             tensor_bytes, to_torch)
from forward_equivalence import InputError, apply_swap, hf_forward, load_hf  # noqa: E402

LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
# One-to-one renames inside a layer. Both the local spec's separate norms and the TE spec's fused
# layer_norm_weight are listed, so the check does not depend on which spec wrote the truth.
LAYER_RENAMES = {
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.linear_fc1.layer_norm_weight": "post_attention_layernorm.weight",
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "self_attention.linear_proj.bias": "self_attn.o_proj.bias",
    "self_attention.q_layernorm.weight": "self_attn.q_layernorm.weight",
    "self_attention.k_layernorm.weight": "self_attn.k_layernorm.weight",
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
    "mlp.linear_fc2.bias": "mlp.down_proj.bias",
}
# Qwen3 names the same per-head q/k norms q_norm / k_norm.
QWEN3_RENAMES = {
    "self_attention.q_layernorm.weight": "self_attn.q_norm.weight",
    "self_attention.k_layernorm.weight": "self_attn.k_norm.weight",
}
# Mixture of Experts: the router, SequentialMLP's local_experts.J (global J in the truth), Qwen2-MoE's shared expert.
EXPERT_RE = re.compile(r"^mlp\.experts\.local_experts\.(\d+)\.linear_fc([12])\.weight$")
MOE_BLOCK = {"mixtral": "block_sparse_moe", "qwen2_moe": "mlp", "qwen3_moe": "mlp"}
# (gate, up, down) of one expert: Mixtral's w1 / w3 / w2, the Qwen-MoE names otherwise.
EXPERT_NAMES = {"mixtral": ("w1", "w3", "w2"), "qwen2_moe": ("gate_proj", "up_proj", "down_proj"),
                "qwen3_moe": ("gate_proj", "up_proj", "down_proj")}
GLOBAL_RENAMES = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "output_layer.weight": "lm_head.weight",
    "decoder.final_layernorm.weight": "model.norm.weight",
}
# GPT-NeoX (GPTNeoXForCausalLM, Pythia's names): LayerNorms with biases, a plain (non-gated) MLP, biases on every
# linear layer; the fused QKV and fc1 are handled in map_neox_layer_tensor. Local and TE spec norms both listed.
NEOX_LAYER_RENAMES = {
    "input_layernorm.weight": "input_layernorm.weight",
    "input_layernorm.bias": "input_layernorm.bias",
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "self_attention.linear_qkv.layer_norm_bias": "input_layernorm.bias",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "pre_mlp_layernorm.bias": "post_attention_layernorm.bias",
    "mlp.linear_fc1.layer_norm_weight": "post_attention_layernorm.weight",
    "mlp.linear_fc1.layer_norm_bias": "post_attention_layernorm.bias",
    "self_attention.linear_proj.weight": "attention.dense.weight",
    "self_attention.linear_proj.bias": "attention.dense.bias",
    "mlp.linear_fc2.weight": "mlp.dense_4h_to_h.weight",
    "mlp.linear_fc2.bias": "mlp.dense_4h_to_h.bias",
}
NEOX_GLOBAL_RENAMES = {
    "embedding.word_embeddings.weight": "gpt_neox.embed_in.weight",
    "output_layer.weight": "embed_out.weight",
    "decoder.final_layernorm.weight": "gpt_neox.final_layer_norm.weight",
    "decoder.final_layernorm.bias": "gpt_neox.final_layer_norm.bias",
}
# HF model_type -> the --model name megatron_writer.py records, where they differ from each other.
WRITER_NAMES = {"gpt_neox": "gptneox"}


# ---------------------------------------------------------------------------------------------------------------
# Megatron global layout -> HF tensors (independent of the engine's mapping code)
# ---------------------------------------------------------------------------------------------------------------

def split_qkv(t, heads, groups):
    """Fused QKV rows are `groups` blocks of [G q heads; 1 k head; 1 v head] (G = heads / groups), each head
    head_dim rows (get_query_key_value_tensors). Works for the weight [rows, H] and the bias [rows] alike."""
    G = heads // groups
    rows = t.shape[0]
    if heads % groups or rows % (groups * (G + 2)):
        raise InputError(f"fused QKV with {rows} rows does not split into {groups} groups of {G}+2 heads")
    hd = rows // (groups * (G + 2))
    blocks = t.reshape(groups, G + 2, hd, *t.shape[1:])
    rest = t.shape[1:]
    q = blocks[:, :G].reshape(heads * hd, *rest)
    return (q.contiguous(), blocks[:, G].reshape(groups * hd, *rest).contiguous(),
            blocks[:, G + 1].reshape(groups * hd, *rest).contiguous())


def split_gate_up(t, rows, what):
    """fc1 rows are [gate (rows); up (rows)] in the global (TP-gathered) layout."""
    if t.shape[0] != 2 * rows:
        raise InputError(f"{what} has {t.shape[0]} rows, expected 2 * {rows}")
    return t[:rows].contiguous(), t[rows:].contiguous()


def map_moe_tensor(suffix, t, model, family):
    """[(HF suffix, tensor)] for a Megatron MoE layer tensor, or None when it is not one."""
    block = MOE_BLOCK[family]
    gate, up, down = EXPERT_NAMES[family]
    m = EXPERT_RE.match(suffix)
    if m:
        j, fc = m.groups()
        if int(j) >= model["experts"]:
            raise InputError(f"{suffix}: expert {j} of {model['experts']}")
        prefix = f"{block}.experts.{j}."
        if fc == "2":
            return [(f"{prefix}{down}.weight", t)]
        g, u = split_gate_up(t, model["moe_ffn"], suffix)
        return [(f"{prefix}{gate}.weight", g), (f"{prefix}{up}.weight", u)]
    if suffix == "mlp.router.weight":
        return [(f"{block}.gate.weight", t)]
    if family == "qwen2_moe":
        if suffix == "mlp.shared_experts.linear_fc1.weight":
            g, u = split_gate_up(t, model["shared_ffn"], suffix)
            return [("mlp.shared_expert.gate_proj.weight", g), ("mlp.shared_expert.up_proj.weight", u)]
        if suffix == "mlp.shared_experts.linear_fc2.weight":
            return [("mlp.shared_expert.down_proj.weight", t)]
        if suffix == "mlp.shared_experts.gate_weight":
            return [("mlp.shared_expert_gate.weight", t)]
    return None


def neox_qkv(t, heads, groups):
    """GPT-NeoX's query_key_value rows are, per head h, [q_h; k_h; v_h]: rebuilt here from the q, k and v that
    split_qkv takes out of Megatron's fused QKV (multi-head only: NeoX has no grouped-query attention)."""
    if groups != heads:
        raise InputError(f"GPT-NeoX needs as many KV heads as heads, Megatron wrote {groups} of {heads}")
    q, k, v = split_qkv(t, heads, groups)
    hd, rest = q.shape[0] // heads, tuple(t.shape[1:])
    per_head = torch.stack([u.reshape(heads, hd, *rest) for u in (q, k, v)], dim=1)  # [heads, 3, hd, ...]
    return per_head.reshape(3 * heads * hd, *rest).contiguous()


def map_neox_layer_tensor(suffix, t, model):
    """[(HF suffix, tensor)] for one Megatron layer tensor of a GPT-NeoX model."""
    kind = suffix.rsplit(".", 1)[-1]
    if suffix in ("self_attention.linear_qkv.weight", "self_attention.linear_qkv.bias"):
        return [(f"attention.query_key_value.{kind}", neox_qkv(t, model["heads"], model["kv_heads"]))]
    if suffix in ("mlp.linear_fc1.weight", "mlp.linear_fc1.bias"):
        if t.shape[0] != model["ffn"]:  # a plain MLP: one block of ffn rows, no [gate; up]
            raise InputError(f"{suffix} has {t.shape[0]} rows, expected {model['ffn']} (a non-gated fc1)")
        return [(f"mlp.dense_h_to_4h.{kind}", t)]
    if suffix in NEOX_LAYER_RENAMES:
        return [(NEOX_LAYER_RENAMES[suffix], t)]
    raise InputError(f"no HF mapping for Megatron layer tensor {suffix!r} (gpt_neox)")


def map_layer_tensor(suffix, t, model, family=None):
    """[(HF suffix, tensor)] for one Megatron layer tensor. family: the output's MoE model_type, gpt_neox, or
    None."""
    if family == "gpt_neox":
        return map_neox_layer_tensor(suffix, t, model)
    if family in MOE_BLOCK:
        pairs = map_moe_tensor(suffix, t, model, family)
        if pairs is not None:
            return pairs
    kind = suffix.rsplit(".", 1)[-1]  # weight | bias
    if suffix.startswith("self_attention.linear_qkv.") and kind in ("weight", "bias"):
        q, k, v = split_qkv(t, model["heads"], model["kv_heads"])
        return [(f"self_attn.q_proj.{kind}", q), (f"self_attn.k_proj.{kind}", k), (f"self_attn.v_proj.{kind}", v)]
    if suffix.startswith("mlp.linear_fc1.") and kind in ("weight", "bias"):
        g, u = split_gate_up(t, model["ffn"], f"linear_fc1.{kind}")
        return [(f"mlp.gate_proj.{kind}", g), (f"mlp.up_proj.{kind}", u)]
    if suffix in QWEN3_RENAMES and model["model"] in ("qwen3", "qwen3_moe"):
        return [(QWEN3_RENAMES[suffix], t)]
    if suffix in LAYER_RENAMES:
        return [(LAYER_RENAMES[suffix], t)]
    raise InputError(f"no HF mapping for Megatron layer tensor {suffix!r}")


def moe_family(cfg, model):
    """The output's MoE family (config.json model_type) or gpt_neox (both need their own mapping), else None;
    cross-checked against the model Megatron wrote."""
    family = cfg.get("model_type")
    neox = WRITER_NAMES["gpt_neox"]
    if family == "gpt_neox" or model["model"] == neox:
        if family != "gpt_neox" or model["model"] != neox:
            raise InputError(f"config.json model_type {family!r}, but Megatron wrote {model['model']}")
        return family
    written = model["model"] if model.get("experts") else None
    if family in MOE_BLOCK or written:
        if family != written:
            raise InputError(f"config.json model_type {family!r}, but Megatron wrote {written or 'a dense model'} "
                             f"({model['model']})")
        return family
    return None


def expected_hf(truth, model, family=None):
    """{HF name: (tensor, Megatron source name)} for the whole truth state dict."""
    out, layers = {}, set()
    layer_prefix, global_renames = (("gpt_neox.layers.", NEOX_GLOBAL_RENAMES) if family == "gpt_neox"
                                    else ("model.layers.", GLOBAL_RENAMES))
    for name, t in truth.items():
        m = LAYER_RE.match(name)
        if m:
            layers.add(int(m.group(1)))
            pairs = [(f"{layer_prefix}{m.group(1)}.{s}", v)
                     for s, v in map_layer_tensor(m.group(2), t, model, family)]
        elif name in global_renames:
            pairs = [(global_renames[name], t)]
        else:
            raise InputError(f"no HF mapping for Megatron tensor {name!r}")
        for hf_name, v in pairs:
            if hf_name in out:
                raise InputError(f"{hf_name} would come from both {out[hf_name][1]} and {name}")
            out[hf_name] = (v, name)
    if sorted(layers) != list(range(model["layers"])):
        raise InputError(f"truth has layers {sorted(layers)}, megatron.json says {model['layers']}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------------

def load_truth(gen):
    path = os.path.join(gen, "truth", "global.safetensors")
    return {n: to_torch(*v) for n, v in read_safetensors(path).items()}


def compare_tensors(expected, got, problems):
    """Set equality, then dtype/shape/bytes per tensor. Returns (tensors compared, bytes compared)."""
    for name in sorted(set(expected) - set(got)):
        problems.append(f"missing tensor {name} (from Megatron's {expected[name][1]})")
    for name in sorted(set(got) - set(expected)):
        problems.append(f"unexpected tensor {name} (no Megatron tensor maps to it)")
    count = nbytes = 0
    for name in sorted(set(expected) & set(got)):
        want, src = expected[name]
        have = got[name]
        if have.dtype != want.dtype:
            # The checkpoint's own dtype is the only thing the truth pins down; a cast output needs another check.
            problems.append(f"{name}: output dtype {TORCH_TO_ST[have.dtype]}, Megatron's {src} is "
                            f"{TORCH_TO_ST[want.dtype]} (a cast output cannot be compared bit-exactly here)")
            continue
        if tuple(have.shape) != tuple(want.shape):
            problems.append(f"{name}: shape {list(have.shape)}, want {list(want.shape)} (from {src})")
            continue
        data = tensor_bytes(have)
        if data != tensor_bytes(want):
            pos, wv, gv, n = first_difference(want, have)
            problems.append(f"{name}: bytes differ from Megatron's {src} ({n} elements); first at {pos}: "
                            f"got {gv!r}, want {wv!r}")
            continue
        count, nbytes = count + 1, nbytes + len(data)
    return count, nbytes


def check_config(cfg, model, problems):
    """The config.json keys the forward reads for attention windows and partial rotary, against Megatron's
    settings (megatron.json). Megatron's window_size (N, 0) lets a query see itself and N earlier keys; HF's
    sliding_window counts the query too, so it must be N + 1. GPT-NeoX's rotary_pct is Megatron's rotary_percent."""
    window = model.get("window")
    family = cfg.get("model_type")
    if family in ("mistral", "mixtral"):
        want = None if window is None else window + 1
        if cfg.get("sliding_window") != want:
            problems.append(f"config.json sliding_window {cfg.get('sliding_window')!r}, want {want!r} "
                            f"(Megatron window_size {None if window is None else (window, 0)})")
    elif window is not None:
        problems.append(f"Megatron used window_size ({window}, 0), but config.json model_type {family!r} has no "
                        f"sliding window on every layer")
    if family == "gpt_neox":
        want = float(model.get("rotary_percent", 1.0))
        if cfg.get("rotary_pct") != want:
            problems.append(f"config.json rotary_pct {cfg.get('rotary_pct')!r}, Megatron's rotary_percent {want}")


def greedy(cfg, T, prompt, n):
    tokens, picked = prompt.clone(), []
    for _ in range(n):
        nxt = int(hf_forward(cfg, T, tokens)[-1].argmax())
        picked.append(nxt)
        tokens = torch.cat([tokens, torch.tensor([nxt])])
    return picked


def check_logits(cfg, T, ref, tolerance, report, problems):
    ids = torch.from_numpy(numpy.load(os.path.join(ref, "input_ids.npy")))
    want = torch.from_numpy(numpy.load(os.path.join(ref, "logits_fp32.npy")))
    if ids.dim() != 2 or ids.shape[0] != 1 or want.shape[:2] != ids.shape:
        raise InputError(f"reference input_ids {tuple(ids.shape)} / logits {tuple(want.shape)} are not [1, s(, V)]")
    got = hf_forward(cfg, T, ids[0])
    vocab = got.shape[-1]
    if vocab > want.shape[-1]:
        raise InputError(f"output vocabulary {vocab} is larger than Megatron's {want.shape[-1]}")
    # A trimmed output vocabulary compares its first columns (the prompt is drawn below the real vocabulary).
    diff = (got - want[0, :, :vocab]).abs().max().item()
    report.update(fp32_max_abs=diff, logits_max_abs=want.abs().max().item(), tolerance=tolerance)
    if not diff <= tolerance:  # `not <=` so that a NaN counts as a mismatch
        problems.append(f"float32 logits differ from Megatron's by {diff:.3g} (tolerance {tolerance:g})")
        report["logits_mismatch"] = True


def check_greedy(cfg, T, ref, report, problems):
    with open(os.path.join(ref, "greedy.json")) as f:
        g = json.load(f)
    tokens = greedy(cfg, T, torch.tensor(g["prompt"], dtype=torch.int64), len(g["greedy"]))
    report["greedy"] = {"megatron": g["greedy"], "hf": tokens}
    if tokens != g["greedy"]:
        problems.append(f"greedy tokens {tokens} != Megatron's {g['greedy']}")


def compare(a):
    ref = os.path.join(a.generated, "reference")
    with open(os.path.join(ref, "megatron.json")) as f:
        model = json.load(f)["model"]
    report = {"hf": a.hf, "generated": a.generated, "megatron": model, "swap": a.swap}
    problems = []
    cfg, T = load_hf(a.hf)
    family = moe_family(cfg, model)
    if a.swap:
        apply_swap(cfg, T, a.swap)  # the bit-exact step would trivially catch it; the logits must do so alone
    else:
        check_config(cfg, model, problems)
        expected = expected_hf(load_truth(a.generated), model, family)
        n, nbytes = compare_tensors(expected, T, problems)
        report.update(tensors_expected=len(expected), tensors_output=len(T), tensors_bit_exact=n, bytes_compared=nbytes)
    with torch.no_grad():
        check_logits(cfg, T, ref, a.tolerance, report, problems)
        check_greedy(cfg, T, ref, report, problems)
    report["problems"] = problems
    return report


def summary(a, r):
    exact = f"{r['tensors_bit_exact']}/{r['tensors_expected']} tensors bit-exact ({r['bytes_compared']} bytes), " \
        if "tensors_expected" in r else f"swap {a.swap}, "
    return (f"{a.hf}: {exact}fp32 max abs {r['fp32_max_abs']:.3g} (tolerance {a.tolerance:g}, logits max abs "
            f"{r['logits_max_abs']:.3g}), greedy {r['greedy']['hf']} (Megatron {r['greedy']['megatron']})")


def verdict(a, r):
    if a.expect_mismatch:
        if r.get("logits_mismatch"):
            print(f"ok (mismatch caught, as expected): {summary(a, r)}")
            return 0
        print(f"FAIL: the wrong mapping went unnoticed by the logits check: {summary(a, r)}", file=sys.stderr)
        return 1
    if r["problems"]:
        print(f"FAIL: {len(r['problems'])} problem(s): {summary(a, r)}", file=sys.stderr)
        for p in r["problems"][:100]:
            print(f"FAIL: {p}", file=sys.stderr)
        return 1
    print(f"ok: {summary(a, r)}")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf", required=True, help="converted HF folder (config.json + safetensors)")
    p.add_argument("--generated", required=True, help="folder made by megatron_writer.py (truth/, reference/)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference of the float32 logits")
    p.add_argument("--swap", choices=["qk", "gate_up", "experts"], help="corrupt the loaded weights in memory")
    p.add_argument("--expect-mismatch", action="store_true", help="exit 0 only when the logits check fails")
    p.add_argument("--report", help="write the measured numbers to this JSON file")
    a = p.parse_args(argv)
    try:
        report = compare(a)
    except (InputError, SafetensorsError, OSError, KeyError, ValueError, RuntimeError) as e:
        # RuntimeError: a shape that hf_forward cannot multiply is an unusable output, not a numeric mismatch.
        print(f"check_against_megatron: {a.hf}: unusable input: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if a.report:
        with open(a.report, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    return verdict(a, report)


if __name__ == "__main__":
    sys.exit(main())
