"""Load a converted folder with real transformers and compare it with what real Megatron computed.

    python check_transformers.py --hf OUT --reference GEN/reference [--tolerance 1e-4] [--swap qk|gate_up|experts]
                                 [--expect-mismatch] [--report FILE.json]

Passes when AutoModelForCausalLM.from_pretrained reports no missing, unexpected or mismatched keys,
generation_config.json holds the special-token ids GenerationConfig.from_model_config gives for the config, the float32
logits are within --tolerance (max abs) of Megatron's float32 logits, the greedy tokens equal Megatron's, and,
for bf16/fp16 checkpoints, the logits computed in that dtype are within --native-tolerance of Megatron's.

--swap exchanges q/k (the first kv rows of q_proj with k_proj), gate/up or (MoE) the first and the last expert in
every layer after loading: a wrong mapping that the comparison must catch. With --expect-mismatch the script exits
0 only when it does. For MoE models (Mixtral, Qwen2-MoE, Qwen3-MoE) gate/up is swapped in every expert, as
transformers holds them after loading (fused per layer: experts.gate_up_proj [E, 2F, H], gate rows first), and in
the shared expert where there is one.
Exit status: 0 pass, 1 mismatch, 2 unusable input.
"""

import argparse
import json
import pathlib
import sys

import numpy
import torch
import transformers

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def load(folder, dtype):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, output_loading_info=True)
    model.eval()
    return model, {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs" or v}


def swap(model, what):
    with torch.no_grad():
        for layer in model.model.layers:
            if what == "qk":
                q, k = layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight
                n = k.shape[0]
                tmp = q[:n].clone()
                q[:n] = k
                k.copy_(tmp)
            elif what == "gate_up":
                if not swap_gate_up(mlp_of(layer)):
                    raise ValueError(f"--swap gate_up: no gate/up projections in {type(layer).__name__}")
            else:
                swap_experts(mlp_of(layer))


def mlp_of(layer):
    mlp = getattr(layer, "mlp", None)
    return mlp if mlp is not None else layer.block_sparse_moe  # Mixtral before transformers 5


def swap_experts(mlp):
    """Exchange the first and the last expert (all their weights; the router row stays): what a wrong global
    expert index (EP rank x E/EP + j) would do."""
    experts = getattr(mlp, "experts", None)
    if experts is None:
        raise ValueError("--swap experts: not an MoE model")
    if hasattr(experts, "gate_up_proj"):
        for w in (experts.gate_up_proj, experts.down_proj):
            exchange(w[0], w[-1])
    else:
        for a, b in zip(experts[0].parameters(), experts[-1].parameters()):
            exchange(a, b)


def exchange(a, b):
    tmp = a.clone()
    a.copy_(b)
    b.copy_(tmp)


def swap_gate_up(mlp):
    """Exchange gate and up in a dense MLP, in every expert of an MoE block and in its shared expert.
    Returns how many projections were swapped."""
    swapped = 0
    if hasattr(mlp, "gate_proj") and hasattr(mlp, "up_proj"):
        exchange(mlp.gate_proj.weight, mlp.up_proj.weight)
        swapped += 1
    experts = getattr(mlp, "experts", None)
    if experts is not None and hasattr(experts, "gate_up_proj"):
        # Fused at load: [E, 2F, H], the gate rows then the up rows of each expert (chunked on the output dim).
        w = experts.gate_up_proj
        if getattr(experts, "is_transposed", False):
            raise ValueError("--swap gate_up: transposed fused experts are not handled")
        f = w.shape[1] // 2
        exchange(w[:, :f], w[:, f:])
        swapped += 1
    elif experts is not None:  # one module per expert (transformers before fused experts)
        for expert in experts:
            gate, up = ("gate_proj", "up_proj") if hasattr(expert, "gate_proj") else ("w1", "w3")
            exchange(getattr(expert, gate).weight, getattr(expert, up).weight)
            swapped += 1
    shared = getattr(mlp, "shared_expert", None)
    if shared is not None:
        swapped += swap_gate_up(shared)
    return swapped


def greedy(model, prompt, n):
    tokens = prompt.clone()
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(tokens).logits[0, -1].float().argmax())
            out.append(nxt)
            tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
    return out


def compare(a):
    ref = pathlib.Path(a.reference)
    meta = json.loads((ref / "megatron.json").read_text())
    prompt = torch.from_numpy(numpy.load(ref / "input_ids.npy"))
    want = torch.from_numpy(numpy.load(ref / "logits_fp32.npy"))
    expected_greedy = json.loads((ref / "greedy.json").read_text())["greedy"]
    report = {"megatron": meta, "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    problems = []

    model, info = load(a.hf, torch.float32)
    report["loading_info"] = info
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(kind):
            problems.append(f"{kind}: {info[kind]}")
    # generation_config.json: the special-token ids save_pretrained would write for the loaded config.
    ids = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    written = transformers.GenerationConfig.from_pretrained(a.hf)
    derived = transformers.GenerationConfig.from_model_config(model.config)
    report["generation_config"] = {k: getattr(written, k, None) for k in ids}
    if report["generation_config"] != {k: getattr(derived, k, None) for k in ids}:
        problems.append(f"generation_config.json {report['generation_config']} differs from the config's ids "
                        f"{ {k: getattr(derived, k, None) for k in ids} }")
    if a.swap:
        swap(model, a.swap)
    with torch.no_grad():
        got = model(prompt).logits.float()
    vocab = got.shape[-1]
    diff = (got - want[..., :vocab]).abs().max().item()
    report["fp32_max_abs"] = diff
    report["logits_max_abs"] = want.abs().max().item()
    if diff > a.tolerance:
        problems.append(f"float32 logits differ from Megatron's by {diff:.3g} (tolerance {a.tolerance:g})")
    tokens = greedy(model, prompt, len(expected_greedy))
    report["greedy"] = {"megatron": expected_greedy, "transformers": tokens}
    if tokens != expected_greedy:
        problems.append(f"greedy tokens {tokens} != Megatron's {expected_greedy}")

    native_file = ref / "logits_native.npy"
    if native_file.exists():
        native, _ = load(a.hf, DTYPES[meta["model"]["dtype"]])
        if a.swap:
            swap(native, a.swap)
        with torch.no_grad():
            got_native = native(prompt).logits.float()
        want_native = torch.from_numpy(numpy.load(native_file))
        nd = (got_native - want_native[..., :vocab]).abs().max().item()
        report["native_max_abs"] = nd
        if nd > a.native_tolerance:
            problems.append(f"{meta['model']['dtype']} logits differ from Megatron's by {nd:.3g} "
                            f"(tolerance {a.native_tolerance:g})")
    report["problems"] = problems
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hf", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--native-tolerance", type=float, default=0.05)
    p.add_argument("--swap", choices=["qk", "gate_up", "experts"])
    p.add_argument("--expect-mismatch", action="store_true")
    p.add_argument("--report")
    a = p.parse_args(argv)
    try:
        report = compare(a)
    except (OSError, ValueError, KeyError) as e:
        print(f"check_transformers: {a.hf}: {e}", file=sys.stderr)
        return 2
    if a.report:
        pathlib.Path(a.report).write_text(json.dumps(report, indent=1) + "\n")
    summary = (f"{a.hf}: fp32 max abs {report['fp32_max_abs']:.3g}"
               + (f", native max abs {report['native_max_abs']:.3g}" if "native_max_abs" in report else "")
               + f", greedy {report['greedy']['transformers']}")
    if a.expect_mismatch:
        if report["problems"]:
            print(f"ok (mismatch caught, as expected): {summary}: {report['problems'][0]}")
            return 0
        print(f"FAIL: the wrong mapping went unnoticed: {summary}", file=sys.stderr)
        return 1
    if report["problems"]:
        print(f"FAIL: {summary}", file=sys.stderr)
        for problem in report["problems"]:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"ok: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
