"""Both formats through Megatron's own megatron.training.checkpointing.save_checkpoint, where the megatron-core wheel
carries megatron.training (0.17 and later): the real state dict, file layout, tracker file and common state.

No optimizer is passed: Megatron's optimizers accept only CUDA tensors (they check the tensor type string), so the
files hold the model, args, iteration and RNG state; the older versions' reproduction adds a torch Adam state."""

import torch
import torch.distributed as dist


def available():
    try:
        import megatron.training.checkpointing  # noqa: F401
    except ImportError:
        return False
    return True


def save(out, model, args, iteration):
    from megatron.training.checkpointing import save_checkpoint
    from megatron.training.global_vars import set_args
    # save_checkpoint records the CUDA RNG state beside the CPU one.
    torch.cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    set_args(args)
    for fmt in ("torch", "torch_dist"):
        args.save, args.ckpt_format, args.use_dist_ckpt = str(out / fmt), fmt, fmt != "torch"
        save_checkpoint(iteration, model, None, None, 0)
        dist.barrier()
