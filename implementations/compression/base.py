"""What the compression strategies share: which Linear layers they compress, the inference-only
rule, and torchao's availability.

A compression strategy rewrites the weights of a built model in place, for inference:
``compress(model, device, precision)`` is called once, in eval mode, after the quality
reference was taken (``quality.quality_cost``). Compressed are the ``nn.Linear`` layers of the
encoder and decoder blocks (attention projections and FFN): the LM head shares its weight with
the token embedding (tied), and an embedding lookup has no quantized or sparse kernel, so the
head stays as it is, in every strategy alike.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn as nn

from implementations.registry import Context, Strategy


def compressible(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The ``(name, Linear)`` pairs a strategy compresses: every Linear but the tied LM head."""
    tok = getattr(model, "tok", None)
    tied = None if tok is None else tok.weight
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and m.weight is not tied and not name.endswith("lm_head")]


def torchao_reason() -> list[str]:
    """``["torchao not installed"]`` when the package cannot be found, else nothing."""
    return [] if importlib.util.find_spec("torchao") else ["torchao not installed (pip install torchao)"]


class CompressionStrategy(Strategy):
    """No compression; a strategy overrides :meth:`compress` and what it cannot do."""

    identity = False  # True for none: the model's own weights, nothing compressed

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        if ctx.workload == "train" and not self.identity:
            return ["compression is for inference (forward, prefill, decode, generate), not train"]
        return []

    def compress(self, model: nn.Module, device: str, precision) -> None:
        """Rewrite the compressible weights of ``model`` (on ``device``) in place."""

    def quantize(self, model: nn.Module, config, precision) -> None:
        """Apply a torchao ``config`` to the compressible Linears (torchao's ``quantize_``).

        Under a 16-bit autocast the Linears are cast to its dtype first: the quantized weight
        then reports the dtype autocast wants, so autocast never casts (dequantizes) it."""
        from torchao.quantization import quantize_

        chosen = compressible(model)
        if precision.compute_dtype != torch.float32:
            for _, linear in chosen:
                linear.to(precision.compute_dtype)
        ids = {id(m) for _, m in chosen}
        quantize_(model, config, filter_fn=lambda m, fqn: id(m) in ids)
