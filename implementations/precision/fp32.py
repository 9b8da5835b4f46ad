"""fp32: the reference precision, every op in float32."""
from __future__ import annotations

from dataclasses import dataclass

from implementations.registry import Context, param, register

from .base import PrecisionBase, check_rtol


@register("precision", "fp32")
@dataclass(frozen=True)
class FP32(PrecisionBase):
    """Full float32: no autocast, no loss scaling, TF32 left as the process has it (off by default).

    The reference of loss parity; its own parity against itself is exact on a deterministic device.
    """

    parity_rtol: float = param(1e-4, "max relative loss difference vs the fp32 reference")

    def __post_init__(self):
        check_rtol(self.parity_rtol)

    @property
    def label(self) -> str:
        return "fp32"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        return []
