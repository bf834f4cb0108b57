"""--ckpt-format torch as Megatron's save_checkpoint lays it out: iter_N/mp_rank_TT[_PPP][_EEE]/model_optim_rng.pt
with args, checkpoint_version 3.0, iteration, model (model0, model1, ... per virtual stage), optimizer, scheduler
and RNG state; with the distributed optimizer, the optimizer state in distrib_optim.pt beside it.

With expert parallelism (get_checkpoint_name): the folder name ends in the EP rank (_EEE, only when EP > 1, after
the pipeline part, which is only there when PP > 1), each file holds the dense weights of its TP/PP rank and the
local experts of its EP rank (local_experts.0 .. E/EP-1), and only expert-data-parallel rank 0 writes."""

import random

import numpy
import torch
import torch.distributed as dist


def rank_folder(root, iteration, ps):
    tp, pp = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    name = f"mp_rank_{tp:02d}" if ps.get_pipeline_model_parallel_world_size() == 1 else f"mp_rank_{tp:02d}_{pp:03d}"
    if ps.get_expert_model_parallel_world_size() > 1:
        name += f"_{ps.get_expert_model_parallel_rank():03d}"
    return root / f"iter_{iteration:07d}" / name


def optimizer_state(chunks):
    """A real torch Adam state after one step: the bulk of a real rank file, which the converter must not read."""
    params = [p for c in chunks for p in c.parameters()]
    masters = [p.detach().float().clone().requires_grad_(True) for p in params]
    opt = torch.optim.Adam(masters, lr=3e-4)
    for m in masters:
        m.grad = torch.ones_like(m)
    opt.step()
    return {"optimizer": opt.state_dict(), "fp32_from_fp16_params": [[m.detach() for m in masters]]}


def save(root, chunks, args, iteration, ps, a):
    if ps.get_expert_data_parallel_rank() == 0:
        write(root, chunks, args, iteration, ps, a)
    dist.barrier()
    if dist.get_rank() == 0:
        (root / "latest_checkpointed_iteration.txt").write_text(str(iteration))


def write(root, chunks, args, iteration, ps, a):
    folder = rank_folder(root, iteration, ps)
    folder.mkdir(parents=True, exist_ok=True)
    state = {"args": args, "checkpoint_version": 3.0, "iteration": iteration,
             "num_floating_point_operations_so_far": 0,
             "opt_param_scheduler": {"max_lr": 3e-4, "min_lr": 0.0, "num_steps": iteration},
             "rng_state": [{"random_rng_state": random.getstate(), "np_rng_state": numpy.random.get_state(),
                            "torch_rng_state": torch.get_rng_state(), "cuda_rng_state": torch.get_rng_state(),
                            "rng_tracker_states": {}}]}
    if len(chunks) == 1:
        state["model"] = chunks[0].state_dict_for_save_checkpoint()
    else:
        for i, chunk in enumerate(chunks):
            state[f"model{i}"] = chunk.state_dict_for_save_checkpoint()
    if a.distributed_optimizer:
        # The distributed optimizer writes its state apart; model_optim_rng.pt keeps the model.
        torch.save(optimizer_state(chunks), folder / "distrib_optim.pt")
    else:
        state["optimizer"] = optimizer_state(chunks)
    torch.save(state, folder / "model_optim_rng.pt")
