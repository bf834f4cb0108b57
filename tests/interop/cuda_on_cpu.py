"""The few CUDA calls megatron-core makes on its CPU paths, answered on the CPU. Megatron itself is not edited.

- `torch.cuda.current_device()` names the device of scratch buffers (attention, RoPE frequencies, TP gathers, the
  save's status tensor): it answers "cpu".
- `torch.cuda.synchronize()` (the async filesystem writer's preloading) has nothing to wait for.
- `Tensor.cuda()` (the tied embedding's copy on the last pipeline stage, before its all-reduce) stays on the CPU.
- megatron-core 0.15 JIT-compiles a CUDA allocator at import when it finds a CUDA toolkit (and fails with an
  IndexError, uncaught, when there is no GPU to compile for): the toolkit is hidden from torch.utils.cpp_extension.
- The CUDA RNG tracker's `fork()` (dropout regions) reads CUDA RNG state: an inference tracker makes it a no-op;
  dropout is off in every model written here, so no random stream is consumed there.
"""

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


def _redirect_cuda_device(module, name):
    original = getattr(module, name)

    def call(*args, **kwargs):
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return original(*args, **kwargs)

    setattr(module, name, call)


def after_parallel_init():
    from megatron.core.tensor_parallel import random as tp_random
    tp_random.initialize_rng_tracker(inference_rng_tracker=True)
