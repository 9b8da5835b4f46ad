"""fused: the model's fused kernels, a fused (or multi-tensor) optimizer, optional torch.compile."""
from __future__ import annotations

import functools
import shutil

import torch
from pydantic import Field

from implementations.ops.base import OpsStrategy
from implementations.registry import Context, register


@functools.lru_cache(maxsize=None)
def fused_adamw_supported(device_type: str) -> bool:
    """Whether ``AdamW(fused=True)`` steps on this device type (CUDA; CPU in recent torch)."""
    if device_type == "cuda" and not torch.cuda.is_available():
        return False
    try:
        p = torch.nn.Parameter(torch.zeros(2, device=device_type))
        p.grad = torch.ones_like(p)
        torch.optim.AdamW([p], lr=1e-3, fused=True).step()
    except (RuntimeError, ValueError):
        return False
    return True


@register("ops", "fused")
class FusedOps(OpsStrategy):
    """Fused execution: fused attention/LayerNorm kernels, fused AdamW, optional torch.compile.

    ``model_ops = "fused"`` selects the model's fused path (scaled_dot_product_attention etc.).
    The optimizer is ``AdamW(fused=True)`` where that runs on the parameters' device (probed once
    per device type), else ``AdamW(foreach=True)`` (multi-tensor); ``optimizer.defaults`` says
    which. With ``compile = true`` :meth:`prepare` wraps the model in ``torch.compile``; the first
    calls then include compilation, which the worker measures apart from the steady state.
    """

    compile: bool = Field(False, description="wrap the model in torch.compile (compile time reported "
                                             "separately)")

    model_ops = "fused"

    @property
    def label(self) -> str:
        return "fused_compile" if self.compile else "fused"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        if self.compile and ctx.device == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
            return ["torch.compile on CPU needs a C++ compiler (none found on PATH)"]
        return []

    def make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        params = list(params)
        first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
        if fused_adamw_supported(first.device.type):
            return torch.optim.AdamW(params, lr=lr, fused=True)
        return torch.optim.AdamW(params, lr=lr, foreach=True)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(model) if self.compile else model
