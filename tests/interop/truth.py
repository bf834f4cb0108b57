"""The global weights as Megatron itself sees them: a TP 1 / PP 1 megatron-core model loads the torch_dist checkpoint
with dist_checkpointing.load (Megatron's own resharding), and its state_dict() is written under Megatron's names to
DIR/truth/global.safetensors (with expert parallelism, EP 1: every expert under its global index,
decoder.layers.L.mlp.experts.local_experts.J).

forward_difference then runs that model's forward on the reference prompt: it must give the sharded model's logits,
which proves that the torch_dist checkpoint, the truth and the model that computed the reference are one model."""

import re

import numpy
import torch
from safetensors.torch import save_file

import reference
from save_torch_dist import model_sharded_state_dict


def write(folder, ckpt_dir, model):
    from megatron.core import dist_checkpointing
    loaded = dist_checkpointing.load({"model": model_sharded_state_dict(model)}, str(ckpt_dir))
    model.load_state_dict(loaded["model"], strict=False)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()
               if torch.is_tensor(v) and not k.endswith("_extra_state")}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "global.safetensors"))
    return tensors


def equal_experts(tensors):
    """Pairs of experts of a layer with the same weights: CPU initialisation makes every EP rank's local experts
    alike unless they are redrawn per global expert (model_builder.perturb_experts); a converter that puts an
    expert under the wrong global index would then go unnoticed."""
    seen, equal = {}, []
    for name, t in sorted(tensors.items()):
        m = re.match(r"^(.*\.local_experts\.)(\d+)(\..*)$", name)
        if m:
            key = (m.group(1), m.group(3), t.float().numpy().tobytes())
            if key in seen:
                equal.append((seen[key], name))
            seen.setdefault(key, name)
    return equal


def forward_difference(ref_dir, chunks, a, ps):
    """Max abs difference between this model's float32 logits on the reference prompt (Megatron's forward, one
    rank: no TP, PP or EP) and the sharded model's (reference/logits_fp32.npy). A bf16/fp16 model runs as a float32
    twin with the same weights, as the reference's float32 logits were computed."""
    prompt = torch.from_numpy(numpy.load(ref_dir / "input_ids.npy"))
    want = torch.from_numpy(numpy.load(ref_dir / "logits_fp32.npy"))
    model = chunks[0] if a.dtype == "fp32" else reference.float32_twin(chunks, a, ps)[0]
    s = prompt.shape[1]
    with torch.no_grad():
        got = model(prompt, torch.arange(s).unsqueeze(0), reference.causal_mask(s)).float()
    return (got - want).abs().max().item()
