"""The few CUDA calls megatron-core makes on its CPU paths, answered on the CPU. Megatron itself is not edited.

- `torch.cuda.current_device()` names the device of scratch buffers (attention, RoPE frequencies, TP gathers, the
  save's status tensor): it answers "cpu".
- `torch.cuda.synchronize()` (the async filesystem writer's preloading) has nothing to wait for.
- `Tensor.cuda()` (the tied embedding's copy on the last pipeline stage, before its all-reduce) stays on the CPU.
- megatron-core 0.15 JIT-compiles a CUDA allocator at import when it finds a CUDA toolkit (and fails with an
  IndexError, uncaught, when there is no GPU to compile for): the toolkit is hidden from torch.utils.cpp_extension.
- The CUDA RNG tracker's `fork()` (dropout regions) reads CUDA RNG state: an inference tracker makes it a no-op;
  dropout is off in every model written here, so no random stream is consumed there.

Mixture-of-Experts (moe_cpu_patch, applied by patch()):
- The alltoall token dispatcher and the shared-expert overlap order their work with CUDA streams and events
  (`torch.cuda.Stream`, `Event`, `current_stream`, `stream`, `Tensor.record_stream`): on one CPU stream every
  wait is already satisfied, so they do nothing.
- The dispatcher hands the all-to-all split sizes over as numpy arrays made by a device-to-host copy
  (`moe_utils.maybe_move_tensor_to_cpu(..., as_numpy=True)`); that copy only happens for CUDA tensors, and gloo's
  all_to_all_single refuses the CPU tensors left in their place: CPU tensors become numpy arrays too.
- megatron-core 0.14's router matmul names `te_general_gemm`, which only exists when Transformer Engine imports:
  it is defined as None, which selects the torch matmul path the module already has.
"""

import contextlib

import torch


def patch():
    import torch.utils.cpp_extension
    torch.utils.cpp_extension.CUDA_HOME = None
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.device_count = lambda: 0
    torch.Tensor.cuda = lambda self, *a, **k: self
    # A few save paths ask for tensors on the literal device "cuda".
    _redirect_cuda_device(torch, "tensor")
    _redirect_cuda_device(torch, "empty")
    _redirect_cuda_device(torch, "empty_like")
    _redirect_cuda_device(torch, "zeros")
    _redirect_cuda_device(torch, "ones")  # the sliding-window mask
    moe_cpu_patch()


def _redirect_cuda_device(module, name):
    original = getattr(module, name)

    def call(*args, **kwargs):
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return original(*args, **kwargs)

    setattr(module, name, call)


class _Event:
    def record(self, *a, **k): pass
    def wait(self, *a, **k): pass
    def synchronize(self): pass
    def query(self): return True


class _Stream:
    def wait_stream(self, *a, **k): pass
    def wait_event(self, *a, **k): pass
    def record_event(self, *a, **k): return _Event()
    def synchronize(self): pass
    def query(self): return True


_CURRENT_STREAM = _Stream()


def moe_cpu_patch():
    torch.cuda.Stream = lambda *a, **k: _Stream()
    torch.cuda.Event = lambda *a, **k: _Event()
    torch.cuda.current_stream = lambda *a, **k: _CURRENT_STREAM
    torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()
    torch.Tensor.record_stream = lambda self, *a, **k: None
    try:
        from megatron.core.transformer.moe import moe_utils, token_dispatcher
    except ImportError:  # a megatron-core without MoE
        return
    original = moe_utils.maybe_move_tensor_to_cpu

    def move(tensor, as_numpy=False, record_stream=False):
        if as_numpy and torch.is_tensor(tensor) and not tensor.is_cuda:
            return tensor.numpy()
        return original(tensor, as_numpy=as_numpy, record_stream=record_stream)

    moe_utils.maybe_move_tensor_to_cpu = move
    if hasattr(token_dispatcher, "maybe_move_tensor_to_cpu"):  # imported by name
        token_dispatcher.maybe_move_tensor_to_cpu = move
    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None


def after_parallel_init():
    from megatron.core.tensor_parallel import random as tp_random
    tp_random.initialize_rng_tracker(inference_rng_tracker=True)
