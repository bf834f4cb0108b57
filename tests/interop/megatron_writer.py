"""Write a checkpoint with real megatron-core on CPU, in both formats, with Megatron's own logits.

    python megatron_writer.py --out DIR --model llama --tp 2 --pp 2 [--vpp 2] [--dtype bf16] [--kv-heads 2]
                              [--tied|--untied] [--distributed-optimizer] [--seed 1234]
    python megatron_writer.py --out DIR --model mixtral|qwen3_moe|qwen2_moe --experts 4 --ep 2 [--topk 2]
                              [--moe-ffn 48] [--shared-ffn 64] [--pre-softmax] --tp 2 --pp 2 ...

Run it with the interpreter of an interop environment (ci/interop-env.sh): one with megatron-core, torch 2.x.
It starts TP x PP x DP processes (gloo), builds a GPTModel with the local layer spec and CPU initialisation, and
writes:

With megatron-core 0.17 and later (whose wheel carries megatron.training), both formats are written by Megatron's own
save_checkpoint with the args of its own parser and validate_args (save_with_megatron.py). Older wheels have
neither, and the files are written as save_checkpoint writes them:

  DIR/torch/        --ckpt-format torch: latest_checkpointed_iteration.txt, iter_N/mp_rank_TT[_PPP]/model_optim_rng.pt,
                    laid out as Megatron's save_checkpoint lays it out (model / model0, model1 per virtual stage,
                    optimizer and RNG state beside it); with --distributed-optimizer the parameters are views into
                    the flat buffers of megatron-core's DistributedDataParallel and the optimizer state goes to
                    distrib_optim.pt, as Megatron writes it.
  DIR/torch_dist/   --ckpt-format torch_dist, written by megatron.core.dist_checkpointing.save.
  DIR/reference/    Megatron's forward logits on a fixed batch (float32, gathered over TP, last stage), the batch,
                    greedy tokens, and megatron.json (the model, the layout and the package versions).
  DIR/truth/        global.safetensors: the global tensors under Megatron's names, as a TP 1 / PP 1 megatron-core
                    model holds them after dist_checkpointing.load of DIR/torch_dist (Megatron's own resharding).

Mixture of Experts (--model mixtral, qwen3_moe, qwen2_moe): an MoE layer on every layer (SequentialMLP experts
local_experts.j, top-k softmax router with Megatron's default routing: softmax over the k chosen logits, i.e. the
chosen weights renormalised, or with --pre-softmax softmax over all experts without renormalising; alltoall token
dispatcher; qwen2_moe adds a shared expert with its sigmoid gate, megatron-core 0.16 and later). With --ep N the
experts are split over N expert-parallel ranks; the expert tensor parallel size is Megatron's default, TP, so the
expert grid PP x TP x EP needs EP data-parallel ranks of the dense grid: the world is TP x PP x EP processes (e.g.
TP 2, PP 2, EP 2: 8). The torch format then has one folder per TP, PP and EP rank, mp_rank_TT[_PPP][_EEE].

Before it exits, the TP 1 / PP 1 / EP 1 model that wrote DIR/truth runs Megatron's forward on the reference prompt
(in float32); its logits must match DIR/reference/logits_fp32.npy, computed by the sharded model, within 1e-4, or
the writer fails: the sharded model, both checkpoints and the truth are one global model.

Megatron is never edited: the few CUDA calls on the CPU path are patched here (cuda_on_cpu.py).
"""

import argparse
import importlib.metadata
import os
import pathlib
import socket
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import cuda_on_cpu  # noqa: E402
from model_builder import MOE, MOE_ARGS, SHARED_EXPERT  # noqa: E402

ITERATION = 100
PROMPT_LEN = 12
GREEDY_TOKENS = 4
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=pathlib.Path)
    p.add_argument("--model", choices=["llama", "mistral", "qwen2", "qwen3", "opensci", "gptneox"] + list(MOE),
                   default="llama")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--vpp", type=int, default=None, help="virtual pipeline stages per pipeline rank")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=None, help="query groups (GQA); default: heads")
    p.add_argument("--ffn", type=int, default=128)
    p.add_argument("--kv-channels", type=int, default=None, help="head dim; default hidden / heads")
    p.add_argument("--rotary-percent", type=float, default=1.0)
    p.add_argument("--window", type=int, default=None, help="sliding-window attention over N earlier keys")
    p.add_argument("--vocab", type=int, default=128, help="padded vocabulary size")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    tie = p.add_mutually_exclusive_group()
    tie.add_argument("--tied", dest="tied", action="store_true", default=None)
    tie.add_argument("--untied", dest="tied", action="store_false")
    p.add_argument("--distributed-optimizer", action="store_true")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--truth-tolerance", type=float, default=1e-4,
                   help="max abs difference of the truth model's float32 logits to the sharded model's")
    moe = p.add_argument_group("Mixture of Experts (mixtral, qwen3_moe, qwen2_moe)")
    moe.add_argument("--experts", type=int, default=None, help="num_moe_experts (default 4)")
    moe.add_argument("--ep", type=int, default=None, help="expert_model_parallel_size (default 1)")
    moe.add_argument("--topk", type=int, default=None, help="moe_router_topk (default 2)")
    moe.add_argument("--moe-ffn", type=int, default=None, help="moe_ffn_hidden_size (default --ffn)")
    moe.add_argument("--shared-ffn", type=int, default=None,
                     help="qwen2_moe: moe_shared_expert_intermediate_size (default --ffn)")
    moe.add_argument("--pre-softmax", action="store_true", default=None,
                     help="moe_router_pre_softmax: softmax over all experts, top-k weights not renormalised "
                          "(HF norm_topk_prob false; Megatron requires it for --topk 1)")
    a = p.parse_args(argv)
    if a.tied is None:
        a.tied = a.model == "opensci"
    if a.kv_heads is None:
        a.kv_heads = a.heads
    given = [f"--{n.replace('_', '-')}" for n in MOE_ARGS if getattr(a, n) is not None]
    if a.model not in MOE:
        if given:
            p.error(f"{', '.join(given)}: only for the MoE models ({', '.join(MOE)})")
        a.ep = 1  # the dense grid; the MoE fields stay None and out of megatron.json
        return a
    a.experts = 4 if a.experts is None else a.experts
    a.ep = 1 if a.ep is None else a.ep
    a.topk = 2 if a.topk is None else a.topk
    a.moe_ffn = a.ffn if a.moe_ffn is None else a.moe_ffn
    a.pre_softmax = bool(a.pre_softmax)
    if a.model in SHARED_EXPERT:
        a.shared_ffn = a.ffn if a.shared_ffn is None else a.shared_ffn
    elif a.shared_ffn is not None:
        p.error(f"--shared-ffn: {a.model} has no shared expert (qwen2_moe has)")
    if a.experts < 1 or a.ep < 1 or a.experts % a.ep:
        p.error(f"--experts {a.experts} must be a positive multiple of --ep {a.ep}")
    if not 1 <= a.topk <= a.experts:
        p.error(f"--topk {a.topk} must be between 1 and --experts {a.experts}")
    if a.topk == 1 and not a.pre_softmax:
        p.error("--topk 1 needs --pre-softmax (Megatron's TransformerConfig refuses top-1 over the chosen logit)")
    if a.distributed_optimizer:
        p.error("--distributed-optimizer is not written for MoE models")
    if a.model in SHARED_EXPERT and megatron_core_version() < (0, 16):
        p.error(f"{a.model}: the shared expert's gate (moe_shared_expert_gate) is in megatron-core from 0.16 on; "
                f"this is {'.'.join(map(str, megatron_core_version()))}")
    return a


def megatron_core_version():
    return tuple(int(x) for x in importlib.metadata.version("megatron-core").split(".")[:2])


def world_size(a):
    """Dense ranks TP x PP x DP; with expert parallelism DP = EP (expert grid PP x ETP x EP x expert-DP with
    ETP = TP and expert-DP 1)."""
    return a.tp * a.pp * a.ep


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    world = world_size(a)
    port = free_port()
    mp.spawn(rank_main, args=(world, port, a), nprocs=world, join=True)
    # Megatron's own view of the global weights: a TP 1 / PP 1 model loads the torch_dist checkpoint.
    try:
        mp.spawn(truth_main, args=(free_port(), a), nprocs=1, join=True)
    except mp.ProcessExitedException as e:
        raise SystemExit(f"megatron_writer: the truth model failed its check (exit {e.exit_code})")


def init(rank, world, port, tp, pp, vpp, ep=1):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    cuda_on_cpu.patch()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from megatron.core import parallel_state
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                             virtual_pipeline_model_parallel_size=vpp,
                                             **({"expert_model_parallel_size": ep} if ep > 1 else {}))
    cuda_on_cpu.after_parallel_init()
    return parallel_state


def rank_main(rank, world, port, a):
    ps = init(rank, world, port, a.tp, a.pp, a.vpp, a.ep)
    import model_builder
    import save_legacy
    import save_torch_dist
    import reference
    import save_with_megatron

    chunks = model_builder.build_chunks(a, ps)
    ddp_chunks = model_builder.wrap_distributed_optimizer(chunks, ps) if a.distributed_optimizer else None
    args = model_builder.megatron_args(a, world)
    if save_with_megatron.available():
        save_with_megatron.save(a.out, ddp_chunks or chunks, args, ITERATION)
        saved_by = "megatron.training.checkpointing.save_checkpoint"
    else:
        save_torch_dist.save(a.out / "torch_dist", chunks, args, ITERATION, ps)
        save_legacy.save(a.out / "torch", ddp_chunks or chunks, args, ITERATION, ps, a)
        saved_by = "megatron.core.dist_checkpointing.save; torch.save in save_checkpoint's layout"
    reference.write(a.out / "reference", chunks, a, ps, PROMPT_LEN, GREEDY_TOKENS, saved_by)
    dist.barrier()
    dist.destroy_process_group()


def truth_main(rank, port, a):
    ps = init(0, 1, port, 1, 1, None)
    import model_builder
    import truth

    one = argparse.Namespace(**{**vars(a), "tp": 1, "pp": 1, "vpp": None, "ep": 1})
    chunks = model_builder.build_chunks(one, ps)
    tensors = truth.write(a.out / "truth", a.out / "torch_dist" / f"iter_{ITERATION:07d}", chunks[0])
    diff = truth.forward_difference(a.out / "reference", chunks, one, ps)
    dist.destroy_process_group()
    print(f"truth: the TP 1 / PP 1 / EP 1 model loaded from torch_dist computes the reference logits within "
          f"{diff:.3g} (tolerance {a.truth_tolerance:g})", flush=True)
    if not diff <= a.truth_tolerance:
        print("truth: the truth and the sharded model are not the same model", file=sys.stderr, flush=True)
        sys.exit(1)
    equal = truth.equal_experts(tensors)
    if equal:
        print(f"truth: {len(equal)} experts equal to another, e.g. {equal[0]}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
