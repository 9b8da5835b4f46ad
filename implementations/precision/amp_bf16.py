"""amp_bf16: autocast to bfloat16, fp32 master weights, no loss scaling."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from implementations.registry import Context, param, register

from .base import PrecisionBase, autocast_probe, check_rtol, device_type


@register("precision", "amp_bf16")
@dataclass(frozen=True)
class AmpBF16(PrecisionBase):
    """Automatic mixed precision in bfloat16: ``torch.autocast(device, dtype=torch.bfloat16)``.

    bfloat16 keeps fp32's exponent range, so gradients do not underflow and no GradScaler is
    needed; its 8-bit mantissa makes losses drift from fp32 by about 1e-2 relative over a few
    steps, hence the looser default parity tolerance (5e-2).
    """

    parity_rtol: float = param(5e-2, "max relative loss difference vs the fp32 reference")

    def __post_init__(self):
        check_rtol(self.parity_rtol)

    @property
    def label(self) -> str:
        return "amp_bf16"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        reason = autocast_probe(ctx.device, torch.bfloat16)
        return [reason] if reason else []

    def autocast(self, device: str):
        return torch.autocast(device_type(device), dtype=torch.bfloat16)
