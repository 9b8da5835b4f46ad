"""Which attention kernel a step really ran, read from the operators it dispatched.

``scaled_dot_product_attention`` picks its backend at run time: on Hopper with a recent cuDNN it
prefers cuDNN attention; flash is excluded by any mask and by fp32; a CPU build has its own
flash kernel; anything else falls back to the math path (plain matmul + softmax). Strategies
that pass a mask and strategies that do not can therefore be compared across different kernels
without anyone noticing. ``RecordKernels`` runs the autograd profiler (CPU-side operator events
only, no device tracing) around one step: each ``aten::scaled_dot_product_attention`` event is
one call, the backend operator under it names the kernel, and a call that reached no fused
operator went down the math path. (Python dispatch or function modes would see the same, but
they import ``torch._dynamo``, seconds of start-up in every worker.)

    with RecordKernels() as rec:
        step()
    rec.backends() -> ["cudnn"] | ["flash", "math"] | [] (no SDPA call: eager attention)

Compiled code (``torch.compile``) is not recorded: record an eager step.
"""
from __future__ import annotations

from torch.autograd import profiler

SDPA_OP = "aten::scaled_dot_product_attention"
# forward operator of each SDPA backend -> the name recorded
BACKEND_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_fused_attention_overrideable": "fused_overrideable",
}


class RecordKernels:
    """Context manager recording the SDPA backends of the code run inside it."""

    def __enter__(self) -> "RecordKernels":
        self._prof = profiler.profile()
        self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._prof.__exit__(*exc)

    def counts(self) -> dict[str, int]:
        """Forward SDPA calls per backend; ``math`` for calls that reached no fused operator."""
        out: dict[str, int] = {}
        calls = 0
        for event in self._prof.function_events:
            calls += event.name == SDPA_OP
            name = BACKEND_OPS.get(event.name)
            if name is not None:
                out[name] = out.get(name, 0) + 1
        if calls > sum(out.values()):
            out["math"] = calls - sum(out.values())
        return out

    def backends(self) -> list[str]:
        return sorted(self.counts())


def record_backends(step) -> tuple[list[str], object]:
    """Run ``step`` once under the recorder: (backends, what the step returned)."""
    with RecordKernels() as rec:
        out = step()
    return rec.backends(), out
