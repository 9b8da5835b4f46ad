"""fused: the model's fused kernels, a fused (or multi-tensor) optimizer, optional torch.compile."""
from __future__ import annotations

import contextlib
import functools
import shutil
from typing import Literal

import torch
from pydantic import Field

from implementations.ops.base import OpsStrategy
from implementations.registry import ADDED_LATER, Context, register

SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                 "cudnn": "CUDNN_ATTENTION", "math": "MATH"}  # -> torch.nn.attention.SDPBackend
CUDA_ONLY = ("efficient", "cudnn")  # a CPU build has flash (its own kernel) and math only


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
    ``sdpa_backend`` restricts ``scaled_dot_product_attention`` to one backend for the whole
    point (``torch.nn.attention.sdpa_kernel``; not the fp32 loss-parity reference); a call that
    backend cannot take (a mask flash refuses, a dtype, a head size) fails the point as
    ``not_supported`` with SDPA's refusal. On
    ``auto`` SDPA picks per call; either way the record's ``sdpa_backends`` says what ran.
    """

    compile: bool = Field(False, description="wrap the model in torch.compile (compile time reported "
                                             "separately)")
    sdpa_backend: Literal["auto", "flash", "efficient", "cudnn", "math"] = Field(
        "auto", json_schema_extra=ADDED_LATER,
        description="scaled_dot_product_attention backend: auto (SDPA chooses per call) or one of "
                    "flash, efficient, cudnn (CUDA), math")

    model_ops = "fused"

    @property
    def label(self) -> str:
        backend = "" if self.sdpa_backend == "auto" else f"_sdpa_{self.sdpa_backend}"
        return ("fused_compile" if self.compile else "fused") + backend

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        reasons = []
        if self.compile and ctx.device == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
            reasons.append("torch.compile on CPU needs a C++ compiler (none found on PATH)")
        if self.sdpa_backend in CUDA_ONLY and ctx.device != "cuda":
            reasons.append(f"SDPA's {self.sdpa_backend} backend runs on CUDA only (a CPU build has "
                           "flash and math)")
        elif self.sdpa_backend == "flash" and ctx.gpu_capability and ctx.gpu_capability < (8, 0):
            reasons.append(f"SDPA's flash backend needs compute capability >= 8.0; this GPU has "
                           f"{ctx.gpu_capability[0]}.{ctx.gpu_capability[1]}")
        return reasons

    def kernel_context(self):
        """The SDPA backend restriction of this point (nothing on ``auto``)."""
        if self.sdpa_backend == "auto":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[self.sdpa_backend]))

    def make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        params = list(params)
        first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
        if fused_adamw_supported(first.device.type):
            return torch.optim.AdamW(params, lr=lr, fused=True)
        return torch.optim.AdamW(params, lr=lr, foreach=True)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(model) if self.compile else model
