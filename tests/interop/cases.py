"""The interop matrix: each case is one model written by real megatron-core (both formats) with every pinned
version, converted by the engine and checked against Megatron. Llama-style outputs are also loaded by real
transformers; Open-Sci's modeling code is not part of transformers, so its outputs are checked bit-exact against
Megatron's global weights and with the project's own forward pass."""

import collections

# project_check: also bit-exact against Megatron's weights and the project's own forward pass (Llama-style names,
# full causal attention). releases: the megatron-core releases that write it (None: every pinned one); the families
# beyond Llama and Open-Sci are written by the oldest and the newest release that build them, to keep the matrix
# within its time.
Case = collections.namedtuple("Case", "writer ranks transformers negative_control project_check releases",
                              defaults=(True, None))
OLDEST_AND_NEWEST = ("0.14.0", "0.19.2")

DIMS = ["--layers", "4", "--hidden", "64", "--heads", "4", "--ffn", "128", "--vocab", "128"]
LLAMA = ["--model", "llama"] + DIMS
MOE = DIMS + ["--kv-heads", "2", "--experts", "4", "--topk", "2", "--moe-ffn", "48"]
QWEN2_MOE_RELEASES = ("0.16.1", "0.19.2")
OPENSCI = ["--model", "opensci"] + DIMS

CASES = {
    # GQA, untied, fp32, TP 2 x PP 2; the negative controls (q/k and gate/up swapped) must fail the logits check.
    "llama_tp2_pp2_gqa_fp32": Case(LLAMA + ["--tp", "2", "--pp", "2", "--kv-heads", "2", "--dtype", "fp32"], 3,
                                   True, True),
    # Tied embeddings in a Llama model (tie_word_embeddings), bf16, one rank file.
    "llama_tp1_pp1_tied_bf16": Case(LLAMA + ["--tp", "1", "--pp", "1", "--tied", "--dtype", "bf16"], 1, True, False),
    # Virtual pipeline: model0/model1 per rank file (legacy), global layer offsets (torch_dist).
    "llama_tp1_pp2_vpp2_bf16": Case(LLAMA + ["--tp", "1", "--pp", "2", "--vpp", "2", "--kv-heads", "2",
                                             "--dtype", "bf16"], 2, True, False),
    # Distributed optimizer: legacy parameters are views into DDP's flat buffers; optimizer in distrib_optim.pt.
    "llama_tp2_pp1_distopt_bf16": Case(LLAMA + ["--tp", "2", "--pp", "1", "--kv-heads", "2", "--dtype", "bf16",
                                                "--distributed-optimizer"], 2, True, False),
    # Mistral: sliding-window attention (window_size (4, 0): a query sees itself and 4 earlier keys; HF counts 5).
    # The local layer spec has sliding windows from megatron-core 0.15 on.
    "mistral_tp2_pp1_window4_fp32": Case(["--model", "mistral"] + DIMS + ["--tp", "2", "--pp", "1", "--kv-heads", "2",
                                                                       "--window", "4", "--dtype", "fp32"],
                                         2, True, False, False, ("0.15.3", "0.19.2")),
    # Qwen2: biases on q/k/v only (add_qkv_bias without add_bias_linear).
    "qwen2_tp2_pp2_gqa_bf16": Case(["--model", "qwen2"] + DIMS + ["--tp", "2", "--pp", "2", "--kv-heads", "2",
                                                               "--dtype", "bf16"], 3, True, False, True,
                                   OLDEST_AND_NEWEST),
    # Qwen3: per-head q/k norms (q_norm, k_norm), no biases, a head dim (kv_channels 32) that is not hidden / heads.
    "qwen3_tp2_pp2_kv_channels_fp32": Case(["--model", "qwen3"] + DIMS + ["--tp", "2", "--pp", "2", "--kv-heads", "2",
                                                                       "--kv-channels", "32", "--dtype", "fp32"],
                                           3, True, True, True, OLDEST_AND_NEWEST),
    # GPT-NeoX, the classic recipe: LayerNorm with bias, plain GeLU MLP, biases, rotary on half of each head.
    "gptneox_tp2_pp2_rotary_half_fp32": Case(["--model", "gptneox"] + DIMS + ["--tp", "2", "--pp", "2",
                                                                          "--rotary-percent", "0.5", "--dtype", "fp32"],
                                             3, True, False, False, OLDEST_AND_NEWEST),
    # Mixtral: 4 experts, top 2, TP 2 x PP 2 x EP 2 (8 writer ranks: the expert grid needs 2 data-parallel ranks);
    # legacy folders mp_rank_TT_PPP_EEE, experts TP-sharded as [gate_r; up_r].
    "mixtral_tp2_pp2_ep2_fp32": Case(["--model", "mixtral"] + MOE + ["--tp", "2", "--pp", "2", "--ep", "2",
                                                                   "--dtype", "fp32"], 3, True, True, True,
                                     OLDEST_AND_NEWEST),
    # Qwen3-MoE: q/k norms and experts, PP 2 x EP 2 (legacy folders mp_rank_00_PPP_EEE).
    "qwen3_moe_tp1_pp2_ep2_fp32": Case(["--model", "qwen3_moe"] + MOE + ["--tp", "1", "--pp", "2", "--ep", "2",
                                                                       "--dtype", "fp32"], 2, True, False, True,
                                       OLDEST_AND_NEWEST),
    # Qwen2-MoE: q/k/v biases, experts and a gated shared expert, TP 2 x EP 2 with PP 1 (legacy folders
    # mp_rank_TT_EEE), bf16.
    "qwen2_moe_tp2_pp1_ep2_shared_bf16": Case(["--model", "qwen2_moe"] + MOE + ["--shared-ffn", "64", "--tp", "2",
                                                                              "--pp", "1", "--ep", "2", "--dtype",
                                                                              "bf16"], 3, True, False, True,
                                              QWEN2_MOE_RELEASES),
    # Open-Sci: qk-layernorm, linear and QKV biases, tied embeddings, TP 2 x PP 2.
    "opensci_tp2_pp2_bf16": Case(OPENSCI + ["--tp", "2", "--pp", "2", "--dtype", "bf16"], 4, False, True),
}

# The smallest real checkpoints, committed under tests/golden/NAME (tests/interop/make_golden.py NAME rewrites one):
# one per megatron-core version and one per family, each in both formats, checked by the default test run without
# PyPI.
Golden = collections.namedtuple("Golden", "version writer ranks")
SMALL = ["--layers", "2", "--hidden", "32", "--heads", "4", "--ffn", "64", "--vocab", "64"]
SMALL_MOE = SMALL + ["--kv-heads", "2", "--experts", "4", "--topk", "2", "--moe-ffn", "16"]
GOLDEN = {
    "mcore-0.14.0_llama_tp2_pp2_gqa_fp32": Golden("0.14.0", SMALL + ["--model", "llama", "--tp", "2", "--pp", "2",
                                                                      "--kv-heads", "2", "--dtype", "fp32"], 3),
    "mcore-0.15.3_opensci_tp2_pp1_bf16": Golden("0.15.3", SMALL + ["--model", "opensci", "--tp", "2", "--pp", "1",
                                                                    "--dtype", "bf16"], 2),
    "mcore-0.16.1_llama_tp1_pp2_tied_bf16": Golden("0.16.1", SMALL + ["--model", "llama", "--tp", "1", "--pp", "2",
                                                                       "--tied", "--dtype", "bf16"], 2),
    "mcore-0.19.2_llama_tp2_pp2_distopt_bf16": Golden("0.19.2", SMALL + ["--model", "llama", "--tp", "2", "--pp", "2",
                                                                          "--kv-heads", "2", "--dtype", "bf16",
                                                                          "--distributed-optimizer"], 4),
    # One per further family, spread over the releases.
    "mcore-0.15.3_mistral_tp2_pp1_window4_fp32": Golden("0.15.3", SMALL + ["--model", "mistral", "--tp", "2", "--pp", "1",
                                                                            "--kv-heads", "2", "--window", "4",
                                                                            "--dtype", "fp32"], 2),
    "mcore-0.14.0_qwen2_tp2_pp1_bf16": Golden("0.14.0", SMALL + ["--model", "qwen2", "--tp", "2", "--pp", "1",
                                                                  "--kv-heads", "2", "--dtype", "bf16"], 2),
    "mcore-0.16.1_qwen3_tp1_pp2_kv_channels_fp32": Golden("0.16.1", SMALL + ["--model", "qwen3", "--tp", "1", "--pp", "2",
                                                                              "--kv-channels", "16", "--dtype", "fp32"],
                                                          2),
    "mcore-0.19.2_gptneox_tp2_pp1_rotary_half_fp32": Golden("0.19.2", SMALL + ["--model", "gptneox", "--tp", "2", "--pp",
                                                                                "1", "--rotary-percent", "0.5",
                                                                                "--dtype", "fp32"], 2),
    "mcore-0.14.0_mixtral_tp2_pp2_ep2_fp32": Golden("0.14.0", SMALL_MOE + ["--model", "mixtral", "--tp", "2", "--pp",
                                                                            "2", "--ep", "2", "--dtype", "fp32"], 3),
    "mcore-0.19.2_qwen3_moe_tp1_pp2_ep2_bf16": Golden("0.19.2", SMALL_MOE + ["--model", "qwen3_moe", "--tp", "1", "--pp",
                                                                              "2", "--ep", "2", "--dtype", "bf16"], 2),
    "mcore-0.16.1_qwen2_moe_tp2_pp1_ep2_shared_fp32": Golden("0.16.1", SMALL_MOE + ["--model", "qwen2_moe",
                                                                                     "--shared-ffn", "32", "--tp", "2",
                                                                                     "--pp", "1", "--ep", "2",
                                                                                     "--dtype", "fp32"], 2),
}
