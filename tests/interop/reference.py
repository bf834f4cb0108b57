"""Megatron's own forward pass over the saved model, as its pipeline schedule runs it: stage after stage (and virtual
stage after virtual stage), the activation sent to the next pipeline rank, the logits gathered over TP.

Writes DIR/reference/: input_ids.npy, logits_fp32.npy (the stored weights, computed in float32), for bf16/fp16
models also logits_native.npy (computed in the checkpoint's dtype), greedy.json (tokens Megatron picks greedily
after the prompt, in float32), megatron.json (the model, the layout, the package versions)."""

import argparse
import importlib.metadata
import json
import platform

import numpy
import torch
import torch.distributed as dist

import model_builder


def causal_mask(s):
    return torch.triu(torch.ones(1, 1, s, s, dtype=torch.bool), diagonal=1)  # True = masked


def pipeline_forward(chunks, tokens, ps, dtype, hidden):
    """Logits [b, s, V] on the last stage's ranks, None elsewhere."""
    pp = ps.get_pipeline_model_parallel_world_size()
    me = ps.get_pipeline_model_parallel_rank()
    stage_ranks = dist.get_process_group_ranks(ps.get_pipeline_model_parallel_group())
    s = tokens.shape[1]
    positions = torch.arange(s).unsqueeze(0)
    steps = len(chunks) * pp
    out = None
    for k in range(steps):
        if k % pp != me:
            continue
        chunk = chunks[k // pp]
        if k > 0:
            act = torch.empty(s, tokens.shape[0], hidden, dtype=dtype)
            dist.recv(act, src=stage_ranks[(k - 1) % pp])
            chunk.set_input_tensor(act)
        with torch.no_grad():
            out = chunk(tokens, positions, causal_mask(s))
        if k + 1 < steps:
            dist.send(out.contiguous(), dst=stage_ranks[(k + 1) % pp])
            out = None
    return out


def last_stage_source(ps):
    """The global rank that holds the final logits with TP rank 0."""
    mine = dist.get_rank() if (ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0) else -1
    t = torch.tensor([mine])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def float32_twin(chunks, a, ps):
    """The same weights in float32 modules: Megatron's forward without the rounding of a bf16/fp16 pass."""
    twin = argparse.Namespace(**{**vars(a), "dtype": "fp32"})
    fp32 = model_builder.build_chunks(twin, ps)
    for src, dst in zip(chunks, fp32):
        state = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                 for k, v in src.state_dict().items() if not k.endswith("_extra_state")}
        dst.load_state_dict(state, strict=False)
    return fp32


def logits_for(chunks, tokens, ps, dtype, hidden, src):
    logits = pipeline_forward(chunks, tokens, ps, dtype, hidden)
    shape = torch.tensor(list(logits.shape) if logits is not None else [0, 0, 0])
    dist.broadcast(shape, src=src)
    if logits is None:
        logits = torch.empty(*shape.tolist(), dtype=torch.float32)
    logits = logits.float().contiguous()
    dist.broadcast(logits, src=src)
    return logits


def greedy(chunks, prompt, ps, hidden, src, n):
    tokens = prompt.clone()
    picked = []
    for _ in range(n):
        logits = logits_for(chunks, tokens, ps, torch.float32, hidden, src)
        nxt = int(logits[0, -1].argmax())
        picked.append(nxt)
        tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
    return picked


def versions():
    # The distribution's version: megatron.core.__version__ appends the git hash of the working directory.
    return {"megatron_core": importlib.metadata.version("megatron-core"), "torch": torch.__version__.split("+")[0],
            "numpy": numpy.__version__, "python": platform.python_version()}


def write(folder, chunks, a, ps, prompt_len, greedy_tokens, saved_by):
    dtype = model_builder.DTYPES[a.dtype]
    prompt = torch.randint(0, a.vocab, (1, prompt_len), generator=torch.Generator().manual_seed(a.seed + 7))
    src = last_stage_source(ps)
    native = logits_for(chunks, prompt, ps, dtype, a.hidden, src) if dtype != torch.float32 else None
    fp32_chunks = chunks if dtype == torch.float32 else float32_twin(chunks, a, ps)
    logits = logits_for(fp32_chunks, prompt, ps, torch.float32, a.hidden, src)
    tokens = greedy(fp32_chunks, prompt, ps, a.hidden, src, greedy_tokens)
    if dist.get_rank() != 0:
        return
    folder.mkdir(parents=True, exist_ok=True)
    numpy.save(folder / "input_ids.npy", prompt.numpy().astype(numpy.int64))
    numpy.save(folder / "logits_fp32.npy", logits.numpy())
    if native is not None:
        numpy.save(folder / "logits_native.npy", native.numpy())
    (folder / "greedy.json").write_text(json.dumps({"prompt": prompt[0].tolist(), "greedy": tokens}) + "\n")
    model = {k: v for k, v in vars(a).items()
             if k not in ("out", "truth_tolerance") and (model_builder.is_moe(a) or k not in model_builder.MOE_ARGS)}
    (folder / "megatron.json").write_text(json.dumps({"model": model, "versions": versions(), "iteration": 100,
                                                      "saved_by": saved_by}, indent=1) + "\n")
