"""Which attention kernel a step really ran, read from the operators it dispatched.

``scaled_dot_product_attention`` picks its backend at run time: on Hopper with a recent cuDNN it
prefers cuDNN attention; flash is excluded by any mask and by fp32; a CPU build has its own
flash kernel; anything else falls back to the math path (plain matmul + softmax). Strategies
that pass a mask and strategies that do not can therefore be compared across different kernels
without anyone noticing. ``RecordKernels`` watches one step: a ``TorchFunctionMode`` counts the
SDPA calls, a ``TorchDispatchMode`` sees the backend operator each call dispatched to; a call
that reached no fused operator went down the math path.

    with RecordKernels() as rec:
        step()
    rec.backends() -> ["cudnn"] | ["flash", "math"] | [] (no SDPA call: eager attention)

Compiled code (``torch.compile``) is not seen by Python modes: record an eager step.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# forward operator of each SDPA backend -> the name recorded
BACKEND_OPS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "fused_overrideable",
}


class _Calls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.sdpa = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.sdpa += 1
        return func(*args, **(kwargs or {}))


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.fused: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = BACKEND_OPS.get(func.__name__.split(".")[0])
        if name is not None:
            self.fused[name] = self.fused.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


class RecordKernels:
    """Context manager recording the SDPA backends of the code run inside it."""

    def __enter__(self) -> "RecordKernels":
        self._calls, self._ops = _Calls(), _Ops()
        self._calls.__enter__()
        self._ops.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ops.__exit__(*exc)
        self._calls.__exit__(*exc)

    def counts(self) -> dict[str, int]:
        """Forward SDPA calls per backend; ``math`` for calls that reached no fused operator."""
        out = dict(self._ops.fused)
        math = self._calls.sdpa - sum(out.values())
        if math > 0:
            out["math"] = math
        return out

    def backends(self) -> list[str]:
        return sorted(self.counts())


def record_backends(step) -> tuple[list[str], object]:
    """Run ``step`` once under the recorder: (backends, what the step returned)."""
    with RecordKernels() as rec:
        out = step()
    return rec.backends(), out
