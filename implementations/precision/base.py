"""What the precision strategies share: the plain fp32 training step, what each one computes in
(``compute_dtype``, ``math_format``: nothing parses labels), and a cached autocast probe."""
from __future__ import annotations

import contextlib
import functools
from typing import ClassVar

import torch

from implementations.regions import region
from implementations.registry import Strategy


class PrecisionStrategy(Strategy):
    """fp32 behaviour; a strategy overrides only what its precision changes.

    Each strategy has a ``parity_rtol`` field: the relative loss difference against fp32 (after
    the same training steps) above which parity is flagged as failed. ``compute_dtype`` is the
    dtype autocast runs matmuls in; ``math_format`` names the hardware format of those matmuls
    (``fp32``, ``tf32``, ``fp16``, ``bf16``), the key of the GPU peak-rate table.
    """

    compute_dtype: ClassVar[torch.dtype] = torch.float32
    math_format: ClassVar[str] = "fp32"

    def setup(self, device: str) -> None:
        """Set process-wide flags before the point runs (undone by :meth:`teardown`)."""

    def teardown(self) -> None:
        """Undo :meth:`setup`."""

    def autocast(self, device: str):
        """Context manager around forward + loss."""
        return contextlib.nullcontext()

    def make_scaler(self, device: str) -> torch.amp.GradScaler | None:
        return None

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler=None) -> bool:
        """Backward, optimizer step, zero the gradients (profiler ranges ``backward`` and
        ``optimizer``). Returns True if the step was skipped."""
        with region("backward"):
            loss.backward()
        with region("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return False


def matmul_flags() -> dict:
    """The process-wide float32 matmul flags a precision may change, to restore them."""
    return {"matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
            "precision": torch.get_float32_matmul_precision()}


def set_tf32(on: bool) -> None:
    """TensorFloat-32 on or off for float32 matmuls and convolutions, everywhere."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    torch.set_float32_matmul_precision("high" if on else "highest")


def restore_flags(saved: dict) -> None:
    torch.backends.cuda.matmul.allow_tf32 = saved["matmul"]
    torch.backends.cudnn.allow_tf32 = saved["cudnn"]
    torch.set_float32_matmul_precision(saved["precision"])


def device_type(device) -> str:
    return torch.device(device).type


def capability_reason(ctx, needs: tuple[int, int], what: str) -> list[str]:
    """Why a CUDA point cannot run ``what`` on a GPU below compute capability ``needs``.

    Answered from ``ctx.gpu_capability`` (NVML, read by the parent): asking torch would create a
    CUDA context in the runner, which on an exclusive-process GPU locks every worker out.
    Unknown capability: no refusal (the worker's own failure is then recorded)."""
    cap = ctx.gpu_capability
    if ctx.device != "cuda" or cap is None or tuple(cap) >= needs:
        return []
    return [f"{what} needs compute capability >= {needs[0]}.{needs[1]}; this GPU has "
            f"{cap[0]}.{cap[1]}"]


@functools.lru_cache(maxsize=None)
def autocast_probe(device: str, dtype: torch.dtype) -> str | None:
    """Why a tiny autocast train step (matmul, layer_norm, softmax, cross-entropy, backward) fails
    on the CPU in ``dtype``, or None if it runs (CPU builds differ in their half-precision
    kernels). Cached: one probe per (device, dtype). CUDA is never probed here (see
    ``capability_reason``)."""
    kind = device_type(device)
    if kind != "cpu":
        return None
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(4, 8, generator=gen).to(device).requires_grad_()
        w = torch.randn(8, 8, generator=gen).to(device).requires_grad_()
        with torch.autocast(kind, dtype=dtype):
            h = torch.nn.functional.layer_norm(x @ w, (8,))
            logits = torch.softmax(h, dim=-1) @ w
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(4, device=device))
        loss.backward()
        if not torch.isfinite(x.grad).all():
            return f"autocast {dtype} on {kind} gives non-finite gradients"
    except (RuntimeError, NotImplementedError) as exc:
        return f"autocast {dtype} is not supported on {kind}: {str(exc).splitlines()[0]}"
    return None
