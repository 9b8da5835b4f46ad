"""fp32: the reference precision, every op in float32."""
from __future__ import annotations

from dataclasses import field

from pydantic import Field

from implementations.registry import register

from .base import PrecisionStrategy, matmul_flags, restore_flags, set_tf32


@register("precision", "fp32")
class FP32Precision(PrecisionStrategy):
    """Full float32: no autocast, no loss scaling, and TF32 forced off for the point.

    ``setup`` turns off ``torch.backends.cuda.matmul.allow_tf32`` and ``cudnn.allow_tf32`` and
    sets ``float32_matmul_precision("highest")`` (whatever turned them on before: an fp32 point
    runs at the fp32 rate its peak is taken for); ``teardown`` restores the values found. The
    reference of loss parity; its own parity against itself is exact on a deterministic device.
    """

    parity_rtol: float = Field(1e-4, gt=0, lt=1, description="max relative loss difference vs the fp32 "
                                                                "reference")
    _saved: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def setup(self, device: str) -> None:
        if not self._saved:  # a second setup without teardown keeps the original values
            self._saved.update(matmul_flags())
        set_tf32(False)

    def teardown(self) -> None:
        if self._saved:
            restore_flags(self._saved)
            self._saved.clear()
