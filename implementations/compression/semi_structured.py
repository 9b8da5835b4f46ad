"""2:4 semi-structured sparsity of the Linear layers (``torch.sparse.to_sparse_semi_structured``)."""
from __future__ import annotations

import torch
import torch.nn as nn

from implementations.precision.base import capability_reason
from implementations.registry import Context, register

from .base import CompressionStrategy, compressible

HALF = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}


def prune_2_4(weight: torch.Tensor) -> torch.Tensor:
    """``weight (out, in)`` with, in every run of 4 consecutive input columns, the 2 entries of
    smallest magnitude set to zero (``in`` must be a multiple of 4)."""
    out_f, in_f = weight.shape
    groups = weight.reshape(out_f, in_f // 4, 4)  # (out, in / 4, 4)
    drop = groups.abs().argsort(dim=-1)[..., :2]  # the two smallest of each 4
    return groups.scatter(-1, drop, 0.0).reshape(out_f, in_f)


@register("compression", "semi_structured")
class SemiStructuredCompression(CompressionStrategy):
    """2:4 sparsity: every Linear keeps the 2 largest-magnitude weights of each 4 consecutive
    input columns (50% of the weights, no retraining), stored in PyTorch's semi-structured
    format (values + 2-bit metadata) and multiplied on the sparse tensor cores of Ampere and
    later (CUTLASS / cuSPARSELt), which skip the zeros. Needs fp16 or bf16 weights: the Linears
    are cast to the ``amp_fp16`` / ``amp_bf16`` compute dtype. Not supported on CPU: PyTorch has
    no CPU kernel for this format (prune with ``magnitude`` there)."""

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        reasons = super().not_supported_reasons(ctx)
        if ctx.device != "cuda":
            return reasons + [f"2:4 semi-structured sparse matmuls need an NVIDIA Ampere+ GPU "
                              f"(device is {ctx.device}; torch has no CPU kernel for the format)"]
        if ctx.precision not in HALF:
            reasons.append(f"2:4 sparse kernels take fp16 or bf16 weights: use precision amp_fp16 "
                           f"or amp_bf16 (got {ctx.precision})")
        return reasons + capability_reason(ctx, (8, 0), "2:4 semi-structured sparsity")

    def compress(self, model, device: str, precision) -> None:
        from torch.sparse import to_sparse_semi_structured

        dtype = HALF[precision.label]
        for _, linear in compressible(model):
            with torch.no_grad():
                dense = prune_2_4(linear.weight.detach().to(dtype))
            linear.weight = nn.Parameter(to_sparse_semi_structured(dense), requires_grad=False)
            if linear.bias is not None:
                linear.bias = nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)
