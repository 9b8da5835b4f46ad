"""eager: module-by-module PyTorch, the for-loop optimizer, no compilation."""
from __future__ import annotations

import torch

from implementations.ops.base import OpsStrategy
from implementations.registry import register


@register("ops", "eager")
class EagerOps(OpsStrategy):
    """Textbook eager execution: the model's unfused path and a per-parameter AdamW loop.

    ``model_ops = "eager"`` selects the model's textbook attention and unfused LayerNorm/GELU/FFN;
    the optimizer is ``AdamW(foreach=False, fused=False)``: one small kernel sequence per
    parameter tensor, as in a hand-written loop.
    """

    model_ops = "eager"

    def make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, foreach=False, fused=False)
