#!/usr/bin/python3
"""Self-test of the Python test tooling, without the engine.

For a matrix of fixture configurations: fixture -> write_reference_hf -> check_hf_output (must pass) and
forward_equivalence (must pass, and must fail with --swap gate_up / --swap qk). Then a set of deliberately broken
outputs that check_hf_output must reject and layout mistakes that forward_equivalence must catch, and the sliding
window / GPT-NeoX swap conventions of forward_equivalence. This guards against a checker that passes everything.

    selftest_tooling.py [--workdir DIR] [--keep]

Everything runs in-process (one torch import), so the whole run takes a few seconds. Exit 0 when every expectation
holds.
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import check_hf_output  # noqa: E402
import forward_equivalence  # noqa: E402
import megatron_fixture  # noqa: E402
import write_reference_hf  # noqa: E402

#: (name, fixture CLI args, write_reference_hf extra args, check_hf_output extra args)
CONFIGS = [
    ("opensci_tp1pp1", [], [], []),
    ("opensci_tp2pp2_tied_distopt", ["--tp", "2", "--pp", "2", "--dist-opt-views"], [], []),
    ("llama_tp4_gqa_fp32", ["--arch", "llama", "--tp", "4", "--heads", "8", "--kv-heads", "4", "--dtype", "fp32"],
     [], []),
    ("llama_tp2pp2vpp2", ["--arch", "llama", "--tp", "2", "--pp", "2", "--vpp", "2", "--layers", "8"], [], []),
    ("opensci_untied_fp32_local", ["--untied", "--dtype", "fp32", "--layer-spec", "local"], [], []),
    ("llama_tied_local_distopt_pp2", ["--arch", "llama", "--tied", "--layer-spec", "local", "--pp", "2",
                                      "--dist-opt-views"], [], []),
    ("opensci_headdim32_pp4", ["--kv-channels", "32", "--pp", "4"], [], []),
    ("llama_mha_tp2", ["--arch", "llama", "--kv-heads", "4", "--tp", "2"], [], []),
    ("opensci_release", ["--release"], [], []),
    ("llama_iters_sharded", ["--arch", "llama", "--iterations", "100,200", "--tp", "2"],
     ["--max-shard-size", "20000"], ["--expect-sharded", "--max-shard-size", "20000"]),
    ("llama_fp32_to_bf16_trim", ["--arch", "llama", "--dtype", "fp32", "--tp", "2", "--pp", "2"],
     ["--dtype", "bf16", "--vocab-size", "250"], ["--dtype", "bf16", "--vocab-size", "250"]),
    ("opensci_bf16_to_fp32", ["--tp", "2"], ["--dtype", "fp32"], ["--dtype", "fp32"]),
    # megatron-core 0.19's args (layernorm_epsilon, enums) and local-spec extra states, a non-default epsilon
    ("llama_mcore019_local_eps", ["--arch", "llama", "--tp", "2", "--pp", "2", "--mcore", "0.19", "--layer-spec",
                                  "local", "--norm-epsilon", "1e-6", "--dist-opt-views"], [], []),
]


def quiet(fn, *args):
    """Run a CLI main() in-process, capturing its output; returns (exit code, text)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = fn(*args)
    return rc, buf.getvalue()


class Tally:
    def __init__(self):
        self.failures = []

    def expect(self, label, rc, want_rc, text):
        ok = rc == want_rc
        line = text.strip().splitlines()[0] if text.strip() else ""
        print(f"  [{'ok' if ok else 'WRONG'}] {label}: rc={rc} (want {want_rc}) {line[:150]}")
        if not ok:
            self.failures.append(f"{label}: rc={rc}, want {want_rc}\n{text}")


def run_matrix(work, tally):
    for name, fx_args, ref_args, chk_args in CONFIGS:
        print(name)
        fx = os.path.join(work, name)
        rc, text = quiet(megatron_fixture.main, ["--out", fx] + fx_args)
        tally.expect("fixture", rc, 0, text)
        tracker = open(os.path.join(fx, "checkpoint", "latest_checkpointed_iteration.txt")).read()
        it = "release" if tracker == "release" else f"iter_{int(tracker):07d}"
        exp = os.path.join(fx, "expected", it)
        hf = os.path.join(fx, "hf")
        rc, text = quiet(write_reference_hf.main, ["--truth", os.path.join(exp, "truth.pt"), "--config",
                                                   os.path.join(exp, "config.json"), "--out", hf] + ref_args)
        tally.expect("write_reference_hf", rc, 0, text)
        rc, text = quiet(check_hf_output.main, ["--output", hf, "--expected", exp] + chk_args)
        tally.expect("check_hf_output", rc, 0, text)
        meg = os.path.join(fx, "checkpoint", it)
        for swap, want in (("none", 0), ("gate_up", 1), ("qk", 1)):
            rc, text = quiet(forward_equivalence.main, ["--megatron", meg, "--hf", hf, "--swap", swap])
            tally.expect(f"forward --swap {swap}", rc, want, text)
        rc, text = quiet(forward_equivalence.main, ["--megatron", meg, "--hf", hf, "--swap", "gate_up",
                                                    "--expect-mismatch"])
        tally.expect("forward --swap gate_up --expect-mismatch", rc, 0, text)
        if "iters" in name:  # the older iteration's truth must NOT match the latest checkpoint's output
            rc, text = quiet(check_hf_output.main, ["--output", hf, "--expected",
                                                    os.path.join(fx, "expected", "iter_0000100")] + chk_args)
            tally.expect("check against the wrong iteration", rc, 1, text)


# ---------------------------------------------------------------------------------------------------------------
# Negative cases: corrupted outputs the checker must reject
# ---------------------------------------------------------------------------------------------------------------

def _rewrite_header(path, mutate):
    """Re-encode a file's header after `mutate(header_dict)`; data bytes unchanged."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n], object_pairs_hook=dict)
    hdr = mutate(hdr) or hdr
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def _flip_byte(path, from_end=3):
    raw = bytearray(open(path, "rb").read())
    raw[-from_end] ^= 0x01
    open(path, "wb").write(bytes(raw))


def _append(path, data):
    with open(path, "ab") as f:
        f.write(data)


def _pad_header_extra(path):
    """Valid for the reader, but 8 extra spaces of padding: breaks the writer convention."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    open(path, "wb").write(struct.pack("<Q", n + 8) + raw[8:8 + n] + b" " * 8 + raw[8 + n:])


def _edit_json(path, fn):
    obj = json.load(open(path))
    fn(obj)
    open(path, "w").write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _swap_data_order(path):
    """Reorder two same-size tensors' data (and offsets) so the reader accepts it but the order rule fails."""
    def mutate(h):
        names = [k for k in h if k != "__metadata__"]
        a, b = names[0], names[1]
        sizes = {k: h[k]["data_offsets"][1] - h[k]["data_offsets"][0] for k in (a, b)}
        return {"__metadata__": h["__metadata__"], b: dict(h[b], data_offsets=[0, sizes[b]]),
                a: dict(h[a], data_offsets=[sizes[b], sizes[a] + sizes[b]]),
                **{k: h[k] for k in names[2:]}}
    _rewrite_header(path, mutate)


def run_negative(work, tally):
    print("negative cases (check_hf_output must exit 1)")
    fx = os.path.join(work, "opensci_tp1pp1")
    exp = os.path.join(fx, "expected", "iter_0000100")
    base = os.path.join(fx, "hf")
    st = "model.safetensors"

    def case(label, mutate, extra=()):
        d = os.path.join(work, "neg", label.replace(" ", "_"))
        shutil.copytree(base, d)
        mutate(d)
        rc, text = quiet(check_hf_output.main, ["--output", d, "--expected", exp] + list(extra))
        tally.expect(label, rc, 1, text)

    case("flipped data byte", lambda d: _flip_byte(os.path.join(d, st)))
    case("trailing bytes", lambda d: _append(os.path.join(d, st), b"\0" * 8))
    case("extra header padding", lambda d: _pad_header_extra(os.path.join(d, st)))
    case("missing __metadata__", lambda d: _rewrite_header(os.path.join(d, st),
                                                           lambda h: h.pop("__metadata__") and None))
    case("metadata format tf", lambda d: _rewrite_header(os.path.join(d, st),
                                                         lambda h: h.update({"__metadata__": {"format": "tf"}})))
    case("data order", lambda d: _swap_data_order(os.path.join(d, st)))
    case("renamed tensor", lambda d: _rewrite_header(os.path.join(d, st), lambda h: {
        (k.replace("model.norm.weight", "model.final_norm.weight")): v for k, v in h.items()}))
    case("config rope_theta", lambda d: _edit_json(os.path.join(d, "config.json"),
                                                   lambda c: c.update(rope_theta=500000)))
    case("config true vs 1", lambda d: _edit_json(os.path.join(d, "config.json"),
                                                  lambda c: c.update(tie_word_embeddings=1)))
    case("config missing qk_layernorm", lambda d: _edit_json(os.path.join(d, "config.json"),
                                                             lambda c: c.pop("qk_layernorm")))
    case("unexpected index", lambda d: open(os.path.join(d, "model.safetensors.index.json"), "w").write("{}"))
    case("cast not applied", lambda d: None, ["--dtype", "fp32"])
    case("trim not applied", lambda d: None, ["--vocab-size", "200"])

    sharded = os.path.join(work, "llama_iters_sharded", "hf")
    sexp = os.path.join(work, "llama_iters_sharded", "expected", "iter_0000200")
    idx = "model.safetensors.index.json"

    def scase(label, mutate, extra=("--expect-sharded",)):
        d = os.path.join(work, "neg", label.replace(" ", "_"))
        shutil.copytree(sharded, d)
        mutate(d)
        rc, text = quiet(check_hf_output.main, ["--output", d, "--expected", sexp] + list(extra))
        tally.expect(label, rc, 1, text)

    scase("ghost index entry", lambda d: _edit_json(os.path.join(d, idx), lambda i: i["weight_map"].update(
        {"model.layers.99.mlp.up_proj.weight": "model-00001-of-00009.safetensors"})))
    scase("index total_size", lambda d: _edit_json(os.path.join(d, idx), lambda i: i["metadata"].update(
        total_size=i["metadata"]["total_size"] + 2)))
    scase("index wrong file", lambda d: _edit_json(os.path.join(d, idx), lambda i: i["weight_map"].update(
        {"model.norm.weight": "model-00001-of-%05d.safetensors" % len(set(i["weight_map"].values()))})))
    scase("sharded but not expected", lambda d: None, [])
    scase("wrong split for size", lambda d: None, ["--expect-sharded", "--max-shard-size", "30000"])


# ---------------------------------------------------------------------------------------------------------------
# Layout mistakes forward_equivalence must catch (and the byte checker too)
# ---------------------------------------------------------------------------------------------------------------

def _mutated_output(work, fx_name, label, mutate):
    fx = os.path.join(work, fx_name)
    exp = os.path.join(fx, "expected", "iter_0000100")
    truth = torch.load(os.path.join(exp, "truth.pt"))
    cfg = json.load(open(os.path.join(exp, "config.json")))
    mutate(truth, cfg)
    d = os.path.join(work, "mut", fx_name + "_" + label.replace(" ", "_"))
    write_reference_hf.write_hf_folder(truth, cfg, d)
    return os.path.join(fx, "checkpoint", "iter_0000100"), d


def _naive_fc1(truth, cfg, t=2):
    """The classic bug (§7): concatenate the TP fc1 shards and split the result in half globally."""
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.mlp."
        g, u = truth[p + "gate_proj.weight"], truth[p + "up_proj.weight"]
        shards = [torch.cat([a, b]) for a, b in zip(torch.chunk(g, t), torch.chunk(u, t))]
        cat = torch.cat(shards)
        truth[p + "gate_proj.weight"], truth[p + "up_proj.weight"] = torch.chunk(cat, 2)


def _swap_layers(truth, cfg):
    """Wrong PP offset: layers 0 and 1 exchanged."""
    for k in [k for k in truth if k.startswith("model.layers.0.")]:
        k1 = k.replace("model.layers.0.", "model.layers.1.")
        truth[k], truth[k1] = truth[k1], truth[k]


def _qkv_plain_split(truth, cfg):
    """Wrong GQA split: treat fused rows as [all q; all k; all v] instead of per-group blocks."""
    nq, ng = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, G = cfg["head_dim"], nq // ng
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        q, k, v = truth[p + "q_proj.weight"], truth[p + "k_proj.weight"], truth[p + "v_proj.weight"]
        fused = megatron_fixture.fuse_qkv(q, k, v, megatron_fixture.Dims(0, 0, nq, ng, G, hd, 0, 0, 1, 1, 1, False,
                                                                         False, False, False, 0.0, 0.0))
        truth[p + "q_proj.weight"] = fused[:nq * hd].clone()
        truth[p + "k_proj.weight"] = fused[nq * hd:(nq + ng) * hd].clone()
        truth[p + "v_proj.weight"] = fused[(nq + ng) * hd:].clone()


def _kv_head_modulo(truth, cfg):
    """Wrong GQA head mapping: q heads permuted as if head h used kv head h % nkv."""
    nq, ng, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    G = nq // ng
    perm = [(h % ng) * G + h // ng for h in range(nq)]
    for i in range(cfg["num_hidden_layers"]):
        k = f"model.layers.{i}.self_attn.q_proj.weight"
        truth[k] = truth[k].view(nq, hd, -1)[perm].reshape(nq * hd, -1).clone()


def _rope_interleave(truth, cfg):
    """Applying the HF Meta permutation when it is not needed (§9) to q and k."""
    hd = cfg["head_dim"]
    for i in range(cfg["num_hidden_layers"]):
        for n in ("q_proj", "k_proj"):
            k = f"model.layers.{i}.self_attn.{n}.weight"
            w = truth[k]
            heads = w.shape[0] // hd
            truth[k] = w.view(heads, hd // 2, 2, -1).transpose(1, 2).reshape(w.shape).clone()


def run_mutations(work, tally):
    print("layout mistakes (forward_equivalence must exit 1)")
    cases = [("llama_tp4_gqa_fp32", "naive fc1 concat", _naive_fc1),
             ("llama_tp2pp2vpp2", "swapped layers", _swap_layers),
             ("llama_tp4_gqa_fp32", "qkv split without groups", _qkv_plain_split),
             ("llama_tp4_gqa_fp32", "kv head modulo mapping", _kv_head_modulo),
             ("opensci_tp1pp1", "rope permutation applied", _rope_interleave)]
    for fx_name, label, fn in cases:
        meg, hf = _mutated_output(work, fx_name, label, fn)
        rc, text = quiet(forward_equivalence.main, ["--megatron", meg, "--hf", hf])
        tally.expect(f"{fx_name}: {label}", rc, 1, text)


def run_conventions(tally):
    """Conventions forward_equivalence holds without a fixture: Megatron's window (N, 0) and HF's sliding_window N + 1
    mask the same keys, and the GPT-NeoX negative controls move the rows they claim to."""
    print("conventions (sliding windows, GPT-NeoX swaps)")
    for n in range(4):
        meg = forward_equivalence.megatron_window_mask(argparse.Namespace(window_size=(n, 0)), 7)
        hf = forward_equivalence.hf_window_mask({"model_type": "mistral", "sliding_window": n + 1}, 7)
        # query 5 sees keys 5 - n .. 5, nothing later
        row = [5 - n <= j <= 5 for j in range(7)]
        ok = torch.equal(meg, hf) and hf[5].tolist() == row
        tally.expect(f"window ({n}, 0) == sliding_window {n + 1}", 0 if ok else 1, 0, f"{meg.int()}\n{hf.int()}")
    none = forward_equivalence.hf_window_mask({"model_type": "mixtral", "sliding_window": None}, 7)
    tally.expect("mixtral sliding_window null: causal", 0 if none is None else 1, 0, repr(none))

    nh, hd, H = 2, 3, 4
    cfg = {"model_type": "gpt_neox", "num_attention_heads": nh, "hidden_size": nh * hd, "num_hidden_layers": 1}
    qkv_w = torch.arange(3 * nh * hd * H, dtype=torch.float32).reshape(3 * nh * hd, H)
    fc1_b = torch.arange(8, dtype=torch.float32)
    T = {"gpt_neox.layers.0.attention.query_key_value.weight": qkv_w.clone(),
         "gpt_neox.layers.0.mlp.dense_h_to_4h.bias": fc1_b.clone()}
    forward_equivalence.apply_swap(cfg, T, "qk")
    got = T["gpt_neox.layers.0.attention.query_key_value.weight"].reshape(nh, 3, hd, H)
    want = qkv_w.reshape(nh, 3, hd, H)
    ok = all(torch.equal(got[h, 0], want[h, 1]) and torch.equal(got[h, 1], want[h, 0]) and
             torch.equal(got[h, 2], want[h, 2]) for h in range(nh))
    tally.expect("gpt_neox --swap qk: q_h <-> k_h inside query_key_value", 0 if ok else 1, 0, repr(got))
    forward_equivalence.apply_swap(cfg, T, "gate_up")
    got = T["gpt_neox.layers.0.mlp.dense_h_to_4h.bias"]
    ok = got.tolist() == [4.0, 5.0, 6.0, 7.0, 0.0, 1.0, 2.0, 3.0]
    tally.expect("gpt_neox --swap gate_up: dense_h_to_4h halves exchanged", 0 if ok else 1, 0, repr(got))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args(argv)
    work = a.workdir or tempfile.mkdtemp(prefix="m2h_selftest_")
    os.makedirs(work, exist_ok=True)
    tally = Tally()
    try:
        run_matrix(work, tally)
        run_negative(work, tally)
        run_mutations(work, tally)
        run_conventions(tally)
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if tally.failures:
        print(f"\nSELFTEST FAILED: {len(tally.failures)} expectation(s) not met", file=sys.stderr)
        for f in tally.failures:
            print("----\n" + f, file=sys.stderr)
        return 1
    print("\nSELFTEST OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
