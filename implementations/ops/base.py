"""What the ops strategies share: the model path they select and how they build the optimizer."""
from __future__ import annotations

import contextlib
from typing import ClassVar

import torch

from implementations.registry import Strategy


class OpsStrategy(Strategy):
    """Base of the ops axis. ``model_ops`` goes into ``ModelConfig.ops`` (the model's ``eager`` or
    ``fused`` path); ``make_optimizer(params, lr)`` builds AdamW; ``prepare(model)`` wraps the
    model for execution (identity unless compiled)."""

    model_ops: ClassVar[str] = "eager"

    def make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        raise NotImplementedError

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def kernel_context(self):
        """A context the whole point runs in (the fused ops' SDPA backend); none here."""
        return contextlib.nullcontext()
