"""The global weights as Megatron itself sees them: a TP 1 / PP 1 megatron-core model loads the torch_dist checkpoint
with dist_checkpointing.load (Megatron's own resharding), and its state_dict() is written under Megatron's names to
DIR/truth/global.safetensors."""

import torch
from safetensors.torch import save_file

from save_torch_dist import model_sharded_state_dict


def write(folder, ckpt_dir, model):
    from megatron.core import dist_checkpointing
    loaded = dist_checkpointing.load({"model": model_sharded_state_dict(model)}, str(ckpt_dir))
    model.load_state_dict(loaded["model"], strict=False)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()
               if torch.is_tensor(v) and not k.endswith("_extra_state")}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "global.safetensors"))
