"""eager: module-by-module PyTorch, the for-loop optimizer, no compilation."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from implementations.registry import Context, register


@register("ops", "eager")
@dataclass(frozen=True)
class Eager:
    """Textbook eager execution: the model's unfused path and a per-parameter AdamW loop.

    ``model_ops = "eager"`` selects the model's textbook attention and unfused LayerNorm/GELU/FFN;
    the optimizer is ``AdamW(foreach=False, fused=False)``: one small kernel sequence per
    parameter tensor, as in a hand-written loop.
    """

    model_ops = "eager"

    @property
    def label(self) -> str:
        return "eager"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        return []

    def make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, foreach=False, fused=False)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model
