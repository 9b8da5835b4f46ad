"""amp_bf16: autocast to bfloat16, fp32 master weights, no loss scaling."""
from __future__ import annotations

import torch
from pydantic import Field

from implementations.registry import Context, register

from .base import PrecisionStrategy, autocast_probe, capability_reason, device_type


@register("precision", "amp_bf16")
class AmpBF16Precision(PrecisionStrategy):
    """Automatic mixed precision in bfloat16: ``torch.autocast(device, dtype=torch.bfloat16)``.

    bfloat16 keeps fp32's exponent range, so gradients do not underflow and no GradScaler is
    needed; its 8-bit mantissa makes losses drift from fp32 by about 1e-2 relative over a few
    steps, hence the looser default parity tolerance (5e-2).
    """

    parity_rtol: float = Field(5e-2, gt=0, lt=1, description="max relative loss difference vs the fp32 "
                                                                "reference")

    compute_dtype = torch.bfloat16
    math_format = "bf16"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        reason = autocast_probe(ctx.device, torch.bfloat16)
        return ([reason] if reason else []) + capability_reason(ctx, (8, 0), "bfloat16")

    def autocast(self, device: str):
        return torch.autocast(device_type(device), dtype=torch.bfloat16)
