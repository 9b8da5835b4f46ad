"""What the precision strategies share: the plain fp32 training step, and a cached autocast probe."""
from __future__ import annotations

import contextlib
import functools

import torch


class PrecisionBase:
    """fp32 behaviour; a strategy overrides only what its precision changes.

    Subclasses are frozen dataclasses with a ``parity_rtol`` field: the relative loss difference
    against fp32 (after the same training steps) above which parity is flagged as failed.
    """

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
        """Backward, optimizer step, zero the gradients. Returns True if the step was skipped."""
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return False


def check_rtol(value) -> None:
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"parity_rtol: got {value!r}; allowed: a number in (0, 1)")


def device_type(device) -> str:
    return torch.device(device).type


@functools.lru_cache(maxsize=None)
def autocast_probe(device: str, dtype: torch.dtype) -> str | None:
    """Why a tiny autocast train step (matmul, layer_norm, softmax, cross-entropy, backward) fails
    on ``device`` in ``dtype``, or None if it runs. Cached: one probe per (device, dtype)."""
    kind = device_type(device)
    if kind == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    if kind == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return "this GPU has no bfloat16 support (needs compute capability >= 8.0)"
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
