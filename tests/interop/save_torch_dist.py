"""--ckpt-format torch_dist through megatron.core.dist_checkpointing.save, with the state dict Megatron's
save_checkpoint builds: model (model0, model1, ... per virtual stage), args, iteration, checkpoint_version,
RNG state as a ShardedObject."""

import random

import numpy
import torch
import torch.distributed as dist

#: What megatron.training builds for sharded_state_dict(metadata=...) without a distributed optimizer.
SHARDED_SD_METADATA = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}


def model_sharded_state_dict(chunk):
    try:
        return chunk.sharded_state_dict(metadata=dict(SHARDED_SD_METADATA))
    except TypeError:  # megatron-core before the metadata argument
        return chunk.sharded_state_dict()


def rng_state(ps):
    from megatron.core.dist_checkpointing.mapping import ShardedObject
    state = {"random_rng_state": random.getstate(), "np_rng_state": numpy.random.get_state(),
             "torch_rng_state": torch.get_rng_state(), "cuda_rng_state": torch.get_rng_state(),
             "rng_tracker_states": {}}
    pp, tp = ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()
    return ShardedObject("rng_state", [state], (ps.get_pipeline_model_parallel_world_size(),
                                                ps.get_tensor_model_parallel_world_size()), (pp, tp),
                         replica_id=ps.get_data_parallel_rank())


def save(root, chunks, args, iteration, ps):
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy
    ckpt = root / f"iter_{iteration:07d}"
    if dist.get_rank() == 0:
        ckpt.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    state = {"args": args, "checkpoint_version": 3.0, "iteration": iteration,
             "num_floating_point_operations_so_far": 0, "rng_state": rng_state(ps)}
    if len(chunks) == 1:
        state["model"] = model_sharded_state_dict(chunks[0])
    else:
        for i, chunk in enumerate(chunks):
            state[f"model{i}"] = model_sharded_state_dict(chunk)
    strategy = TorchDistSaveShardedStrategy("torch_dist", 1)
    strategy.thread_count = 1  # Megatron's synchronous save (args.dist_ckpt_workers is for async saves)
    dist_checkpointing.save(state, str(ckpt), strategy)
    dist.barrier()
    if dist.get_rank() == 0:
        (root / "latest_checkpointed_iteration.txt").write_text(str(iteration))
