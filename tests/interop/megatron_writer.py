"""Write a checkpoint with real megatron-core on CPU, in both formats, with Megatron's own logits.

    python megatron_writer.py --out DIR --model llama --tp 2 --pp 2 [--vpp 2] [--dtype bf16] [--kv-heads 2]
                              [--tied|--untied] [--distributed-optimizer] [--seed 1234]

Run it with the interpreter of an interop environment (ci/interop-env.sh): one with megatron-core, torch 2.x.
It starts TP x PP processes (gloo), builds a GPTModel with the local layer spec and CPU initialisation, and writes:

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

Megatron is never edited: the few CUDA calls on the CPU path are patched here (cuda_on_cpu.py).
"""

import argparse
import json
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

ITERATION = 100
PROMPT_LEN = 12
GREEDY_TOKENS = 4
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=pathlib.Path)
    p.add_argument("--model", choices=["llama", "mistral", "qwen2", "qwen3", "opensci", "gptneox"], default="llama")
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
    a = p.parse_args(argv)
    if a.tied is None:
        a.tied = a.model == "opensci"
    if a.kv_heads is None:
        a.kv_heads = a.heads
    return a


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    world = a.tp * a.pp
    port = free_port()
    mp.spawn(rank_main, args=(world, port, a), nprocs=world, join=True)
    # Megatron's own view of the global weights: a TP 1 / PP 1 model loads the torch_dist checkpoint.
    mp.spawn(truth_main, args=(free_port(), a), nprocs=1, join=True)


def init(rank, world, port, tp, pp, vpp):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    cuda_on_cpu.patch()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from megatron.core import parallel_state
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                             virtual_pipeline_model_parallel_size=vpp)
    cuda_on_cpu.after_parallel_init()
    return parallel_state


def rank_main(rank, world, port, a):
    ps = init(rank, world, port, a.tp, a.pp, a.vpp)
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

    one = argparse.Namespace(**{**vars(a), "tp": 1, "pp": 1, "vpp": None})
    chunks = model_builder.build_chunks(one, ps)
    truth.write(a.out / "truth", a.out / "torch_dist" / f"iter_{ITERATION:07d}", chunks[0])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
