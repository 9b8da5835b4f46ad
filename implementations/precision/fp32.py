"""fp32: the reference precision, every op in float32."""
from __future__ import annotations

from pydantic import Field

from implementations.registry import register

from .base import PrecisionStrategy


@register("precision", "fp32")
class FP32Precision(PrecisionStrategy):
    """Full float32: no autocast, no loss scaling, TF32 left as the process has it (off by default).

    The reference of loss parity; its own parity against itself is exact on a deterministic device.
    """

    parity_rtol: float = Field(1e-4, gt=0, lt=1, description="max relative loss difference vs the fp32 "
                                                                "reference")
