"""A megatron-core GPTModel on CPU (local layer spec), its parameters made non-trivial, and Megatron's args for it."""

import argparse
import hashlib
import os
import re
import sys

import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ROTARY_BASE = 10000
NORM_EPSILON = 1e-6  # not Megatron's default: a converter that drops the saved value shows in the logits
SEQ_LENGTH = 64
INIT_STD = 0.05
# What each model family sets beyond Llama's layout.
QKV_BIAS = ("opensci", "qwen2", "gptneox", "qwen2_moe")
QK_LAYERNORM = ("opensci", "qwen3", "qwen3_moe")
LINEAR_BIAS = ("opensci", "gptneox")
# GPT-NeoX is the classic Megatron GPT recipe: LayerNorm, a plain GeLU MLP, biases, partial rotary.
CLASSIC = ("gptneox",)
# Mixture of Experts on every layer (SequentialMLP: local_experts.j), Llama's layout otherwise; Qwen2-MoE adds a
# shared expert with a sigmoid gate (moe_shared_expert_gate, in megatron-core from 0.16 on).
MOE = ("mixtral", "qwen3_moe", "qwen2_moe")
SHARED_EXPERT = ("qwen2_moe",)
#: The writer's MoE options (megatron_writer.py); dense models leave them out of megatron.json.
MOE_ARGS = ("experts", "ep", "topk", "moe_ffn", "shared_ffn", "pre_softmax")
# The realistic dispatcher: tokens go to the EP rank that holds their expert by all-to-all.
TOKEN_DISPATCHER = "alltoall"


def normalization(a):
    return "LayerNorm" if a.model in CLASSIC else "RMSNorm"


def head_dim(a):
    return a.kv_channels or a.hidden // a.heads


def transformer_config(a):
    from megatron.core.transformer.transformer_config import TransformerConfig
    dtype = DTYPES[a.dtype]
    config = TransformerConfig(
        num_layers=a.layers, hidden_size=a.hidden, num_attention_heads=a.heads, num_query_groups=a.kv_heads,
        ffn_hidden_size=a.ffn, kv_channels=head_dim(a),
        tensor_model_parallel_size=a.tp, pipeline_model_parallel_size=a.pp,
        virtual_pipeline_model_parallel_size=a.vpp,
        normalization=normalization(a), layernorm_epsilon=NORM_EPSILON, gated_linear_unit=a.model not in CLASSIC,
        activation_func=F.gelu if a.model in CLASSIC else F.silu, add_bias_linear=a.model in LINEAR_BIAS,
        add_qkv_bias=a.model in QKV_BIAS, qk_layernorm=a.model in QK_LAYERNORM,
        params_dtype=dtype, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, pipeline_dtype=dtype,
        use_cpu_initialization=True, perform_initialization=True, init_method_std=INIT_STD,
        hidden_dropout=0.0, attention_dropout=0.0, bias_dropout_fusion=False, apply_rope_fusion=False,
        masked_softmax_fusion=False, gradient_accumulation_fusion=False, persist_layer_norm=False,
        sequence_parallel=sequence_parallel(a), window_size=(a.window, 0) if a.window else None,
        **moe_config(a),
    )
    # Sequence parallelism splits activations, not weights. megatron-core up to 0.16 refuses EP with TP unless it
    # is on (0.17 on only warns, "for training"): the config is validated with it, as the training run's, and the
    # CPU forward here runs without it (whole sequences between pipeline stages, any prompt length).
    config.sequence_parallel = False
    return config


def sequence_parallel(a):
    """What a training run with expert and tensor parallelism sets (megatron-core <= 0.16 requires it)."""
    return is_moe(a) and a.ep > 1 and a.tp > 1


def is_moe(a):
    return a.model in MOE


def moe_config(a):
    """The TransformerConfig fields of the MoE layer. Routing is Megatron's default: softmax over the top-k logits
    (moe_router_pre_softmax False, score function softmax, no scaling, no capacity factor, no expert bias), i.e.
    the renormalised top-k of Mixtral and of HF's norm_topk_prob; --pre-softmax: softmax over all experts, the
    top-k probabilities as they are (HF norm_topk_prob false). The load-balancing loss (aux_loss, the default)
    only acts in training."""
    if not is_moe(a):
        return {}
    kw = dict(num_moe_experts=a.experts, moe_router_topk=a.topk, moe_ffn_hidden_size=a.moe_ffn,
              expert_model_parallel_size=a.ep, expert_tensor_parallel_size=a.tp,
              moe_token_dispatcher_type=TOKEN_DISPATCHER, moe_grouped_gemm=False,
              moe_router_pre_softmax=a.pre_softmax, moe_router_score_function="softmax",
              moe_router_topk_scaling_factor=None)
    if a.model in SHARED_EXPERT:
        kw.update(moe_shared_expert_intermediate_size=a.shared_ffn, moe_shared_expert_gate=True)
    return kw


def build_chunks(a, ps):
    """One GPTModel per virtual stage of this pipeline rank, as Megatron's get_model builds them."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    config = transformer_config(a)
    moe = dict(num_experts=a.experts, moe_grouped_gemm=False) if is_moe(a) else {}
    spec = get_gpt_layer_local_spec(qk_layernorm=a.model in QK_LAYERNORM, normalization=normalization(a), **moe)
    chunks = []
    for vp in range(a.vpp or 1):
        vp_stage = vp if a.vpp else None
        torch.manual_seed(a.seed + 1000 * ps.get_pipeline_model_parallel_rank() + vp)
        model = GPTModel(
            config=config, transformer_layer_spec=spec, vocab_size=a.vocab, max_sequence_length=SEQ_LENGTH,
            pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
            post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
            parallel_output=False, share_embeddings_and_output_weights=a.tied, position_embedding_type="rope",
            rotary_base=ROTARY_BASE, rotary_percent=a.rotary_percent, vp_stage=vp_stage)
        perturb_replicated(model, a.seed)
        if is_moe(a):
            perturb_experts(model, a.seed, a.experts, ps)
        if config.bf16 or config.fp16:
            # As megatron.training's get_model: the whole chunk in the training dtype, norms included.
            from megatron.core.transformer.module import Float16Module
            model = Float16Module(config, model)
        model.eval()
        chunks.append(model)
    return chunks


def perturb_replicated(model, seed):
    """Norm weights start at 1 and biases at 0: draw them, so that a norm or bias put in the wrong place shows.

    Each is drawn from a generator keyed by the parameter's name and shape only, so TP replicas stay equal (as
    Megatron keeps them); TP-split biases get the same values on every rank, which is still a valid model."""
    for name, p in model.named_parameters():
        if not (name.endswith("bias") or "norm" in name):
            continue
        g = torch.Generator().manual_seed(seed ^ int(hashlib.sha256(f"{name}{tuple(p.shape)}".encode()).hexdigest()[:8], 16))
        values = torch.empty(p.shape, dtype=torch.float32).uniform_(0.5, 1.5, generator=g) if "norm" in name else \
            torch.empty(p.shape, dtype=torch.float32).normal_(0, 0.1, generator=g)
        with torch.no_grad():
            p.copy_(values.to(p.dtype))


def perturb_experts(model, seed, experts, ps):
    """CPU initialisation draws the local experts of every EP rank from the same random stream, so expert j would
    be equal on every EP rank (and local_experts.0 the same tensor as local_experts.E/EP): redraw each expert
    weight from a generator keyed by its GLOBAL expert index (EP rank x E/EP + j), its name and, when the experts
    are TP-sharded (expert tensor parallel size > 1), the expert-TP rank, whose shard it is. Expert-data-parallel
    replicas draw the same values, as Megatron keeps them. The router and the shared expert are replicated
    across EP and drawn by Megatron's own initialisation (equal on every rank of a stage, like the attention)."""
    local = experts // ps.get_expert_model_parallel_world_size()
    first = ps.get_expert_model_parallel_rank() * local
    etp = ps.get_expert_tensor_parallel_rank() if ps.get_expert_tensor_parallel_world_size() > 1 else 0
    for name, p in model.named_parameters():
        m = re.search(r"\.local_experts\.(\d+)\.", name)
        if not m:
            continue
        global_name = f"{name[:m.start()]}.local_experts.{first + int(m.group(1))}.{name[m.end():]}"
        key = f"{global_name}{tuple(p.shape)}etp{etp}"
        g = torch.Generator().manual_seed(seed ^ int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
        with torch.no_grad():
            p.copy_(torch.empty(p.shape, dtype=torch.float32).normal_(0, 2 * INIT_STD, generator=g).to(p.dtype))


def wrap_distributed_optimizer(chunks, ps):
    """megatron-core's DDP with the distributed optimizer: parameters become views into flat contiguous buffers,
    which is what Megatron's legacy save then pickles."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    ddp_config = DistributedDataParallelConfig(use_distributed_optimizer=True, overlap_grad_reduce=False,
                                               bucket_size=None)
    wrapped = []
    for i, chunk in enumerate(chunks):
        wrapped.append(DistributedDataParallel(config=chunk.config, ddp_config=ddp_config, module=chunk,
                                               disable_bucketing=i > 0))
    return wrapped


def megatron_args(a, world):
    """Megatron's own args Namespace: megatron.training's parse_args and validate_args where the package has them."""
    flags = [
        "--num-layers", str(a.layers), "--hidden-size", str(a.hidden), "--num-attention-heads", str(a.heads),
        "--ffn-hidden-size", str(a.ffn), "--kv-channels", str(head_dim(a)),
        "--seq-length", str(SEQ_LENGTH), "--max-position-embeddings", str(SEQ_LENGTH),
        "--tensor-model-parallel-size", str(a.tp), "--pipeline-model-parallel-size", str(a.pp),
        "--normalization", normalization(a), "--norm-epsilon", str(NORM_EPSILON),
        "--position-embedding-type", "rope", "--rotary-base", str(ROTARY_BASE), "--rotary-percent", str(a.rotary_percent),
        "--micro-batch-size", "1", "--global-batch-size", str(max(1, world // (a.tp * a.pp))),
        "--lr", "3e-4", "--train-iters", "1000", "--tokenizer-type", "NullTokenizer", "--vocab-size", str(a.vocab),
        "--ckpt-format", "torch", "--save-interval", "100", "--transformer-impl", "local",
        "--init-method-std", str(INIT_STD), "--attention-dropout", "0", "--hidden-dropout", "0",
    ]
    if a.kv_heads != a.heads:
        flags += ["--group-query-attention", "--num-query-groups", str(a.kv_heads)]
    if a.vpp:
        flags += ["--num-layers-per-virtual-pipeline-stage", str(a.layers // a.pp // a.vpp)]
    if a.model not in CLASSIC:
        flags += ["--swiglu"]
    if a.window:
        flags += ["--window-size", f"{a.window},0"]
    if a.model in QK_LAYERNORM:
        flags += ["--qk-layernorm"]
    if a.model not in LINEAR_BIAS:
        flags += ["--disable-bias-linear"]
    if a.model in QKV_BIAS and a.model not in LINEAR_BIAS:  # Qwen2, Qwen2-MoE: biases on q/k/v only
        flags += ["--add-qkv-bias"]
    if not a.tied:
        flags += ["--untie-embeddings-and-output-weights"]
    if a.dtype == "bf16":
        flags += ["--bf16"]
    elif a.dtype == "fp16":
        flags += ["--fp16"]
    if a.distributed_optimizer:
        flags += ["--use-distributed-optimizer"]
    if is_moe(a):
        flags += ["--num-experts", str(a.experts), "--moe-router-topk", str(a.topk),
                  "--moe-ffn-hidden-size", str(a.moe_ffn), "--expert-model-parallel-size", str(a.ep),
                  "--moe-token-dispatcher-type", TOKEN_DISPATCHER]
        if a.pre_softmax:
            flags += ["--moe-router-pre-softmax"]
        if a.model in SHARED_EXPERT:
            flags += ["--moe-shared-expert-intermediate-size", str(a.shared_ffn), "--moe-shared-expert-gate"]
        if sequence_parallel(a):
            flags += ["--sequence-parallel"]
    try:
        from megatron.training.arguments import parse_args
    except ImportError:
        return namespace_without_parser(a, world)
    import megatron.training.arguments as arguments
    saved = sys.argv
    sys.argv = ["pretrain_gpt.py"] + flags
    try:
        args = parse_args()
    finally:
        sys.argv = saved
    # validate_args asks the GPU's architecture (for defaults that depend on it) and insists on the environment
    # that TP needs on a GPU; neither changes a field the converter reads.
    arguments.get_device_arch_version = lambda: 9
    os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] = "1"
    arguments.validate_args(args)
    args.padded_vocab_size = a.vocab  # what training's tokenizer build sets after validate_args
    return args


def namespace_without_parser(a, world):
    """For megatron-core wheels without megatron.training: the fields a training run's Namespace carries for
    this model, with the values Megatron's parser and validate_args would give them."""
    args = dict(
        num_layers=a.layers, hidden_size=a.hidden, num_attention_heads=a.heads, ffn_hidden_size=a.ffn,
        kv_channels=head_dim(a), group_query_attention=a.kv_heads != a.heads,
        num_query_groups=a.kv_heads if a.kv_heads != a.heads else 1,
        seq_length=SEQ_LENGTH, max_position_embeddings=SEQ_LENGTH, padded_vocab_size=a.vocab, vocab_size=a.vocab,
        tensor_model_parallel_size=a.tp, pipeline_model_parallel_size=a.pp,
        virtual_pipeline_model_parallel_size=a.vpp,
        num_layers_per_virtual_pipeline_stage=a.layers // a.pp // a.vpp if a.vpp else None,
        world_size=world, data_parallel_size=world // (a.tp * a.pp), normalization=normalization(a),
        norm_epsilon=NORM_EPSILON, swiglu=a.model not in CLASSIC, position_embedding_type="rope",
        rotary_base=ROTARY_BASE, rotary_percent=a.rotary_percent, rotary_interleaved=False, apply_layernorm_1p=False, qk_layernorm=a.model in QK_LAYERNORM,
        add_bias_linear=a.model in LINEAR_BIAS, add_qkv_bias=a.model in QKV_BIAS, untie_embeddings_and_output_weights=not a.tied,
        bf16=a.dtype == "bf16", fp16=a.dtype == "fp16", params_dtype=DTYPES[a.dtype],
        use_distributed_optimizer=a.distributed_optimizer, ckpt_format="torch", tokenizer_type="NullTokenizer",
        micro_batch_size=1, global_batch_size=1, lr=3e-4, train_iters=1000, num_experts=None,
        multi_latent_attention=False, init_method_std=INIT_STD, hidden_dropout=0.0, attention_dropout=0.0,
        transformer_impl="local", window_size=(a.window, 0) if a.window else None,
    )
    if is_moe(a):
        args.update(moe_args(a, world))
    return argparse.Namespace(**args)


def moe_args(a, world):
    """The MoE fields of a training run's Namespace, with the values of Megatron's parser and validate_args."""
    args = dict(
        global_batch_size=world // (a.tp * a.pp),
        num_experts=a.experts, moe_router_topk=a.topk, moe_ffn_hidden_size=a.moe_ffn,
        expert_model_parallel_size=a.ep, expert_tensor_parallel_size=a.tp, moe_layer_freq=1,
        moe_token_dispatcher_type=TOKEN_DISPATCHER, moe_grouped_gemm=False, moe_use_legacy_grouped_gemm=False,
        moe_router_load_balancing_type="aux_loss", moe_aux_loss_coeff=0.0, moe_z_loss_coeff=None,
        moe_router_pre_softmax=a.pre_softmax, moe_router_score_function="softmax", moe_router_topk_scaling_factor=None,
        moe_router_num_groups=None, moe_router_group_topk=None, moe_router_enable_expert_bias=False,
        moe_router_dtype=None, moe_expert_capacity_factor=None, moe_input_jitter_eps=None,
        moe_shared_expert_intermediate_size=None, moe_shared_expert_overlap=False,
        sequence_parallel=sequence_parallel(a),
    )
    if a.model in SHARED_EXPERT:
        args.update(moe_shared_expert_intermediate_size=a.shared_ffn, moe_shared_expert_gate=True)
    return args
