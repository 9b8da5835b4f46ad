"""tf32: float32 tensors, matmuls and convolutions on TensorFloat-32 tensor cores."""
from __future__ import annotations

from dataclasses import field

from pydantic import Field

from implementations.registry import Context, register

from .base import PrecisionStrategy, capability_reason, matmul_flags, restore_flags, set_tf32


@register("precision", "tf32")
class TF32Precision(PrecisionStrategy):
    """fp32 with TF32 matmul/cuDNN (10-bit mantissa inputs, fp32 accumulate) on Ampere+ GPUs.

    ``setup`` turns on ``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``
    and ``torch.set_float32_matmul_precision("high")``; ``teardown`` restores the three values
    found. On CPU the point is not supported (TF32 is a tensor-core format; running it as fp32
    would record fp32 numbers under a tf32 label).
    """

    parity_rtol: float = Field(1e-2, gt=0, lt=1, description="max relative loss difference vs the fp32 "
                                                                "reference")
    _saved: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    math_format = "tf32"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        if ctx.device != "cuda":
            return [f"TF32 needs an NVIDIA Ampere+ GPU (device is {ctx.device})"]
        return capability_reason(ctx, (8, 0), "TF32 (an NVIDIA Ampere+ tensor-core format)")

    def setup(self, device: str) -> None:
        if not self._saved:  # a second setup without teardown keeps the original values
            self._saved.update(matmul_flags())
        set_tf32(True)

    def teardown(self) -> None:
        if self._saved:
            restore_flags(self._saved)
            self._saved.clear()
