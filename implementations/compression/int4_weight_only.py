"""int4 weight-only quantization through torchao (bf16 activations, tensor-core int4 kernel)."""
from __future__ import annotations

from pydantic import Field

from implementations.precision.base import capability_reason
from implementations.registry import Context, LENGTH_CAP, register

from .base import CompressionStrategy, torchao_reason


@register("compression", "int4_weight_only")
class Int4WeightOnlyCompression(CompressionStrategy):
    """torchao's ``Int4WeightOnlyConfig`` with the ``tile_packed_to_4d`` packing (PyTorch's own
    ``_weight_int4pack_mm`` kernel): weights int4 in groups of ``group_size`` input columns, each
    group with a bf16 scale and zero point; activations bf16. The Linears are cast to bf16 first
    (the kernel's only dtype: ``CompressionStrategy.quantize``), so the point needs ``amp_bf16``.
    CUDA Ampere+ only: torchao has no CPU kernel for this layout, and its plain layout needs the
    separate ``mslk`` package."""

    group_size: int = Field(128, ge=1, le=LENGTH_CAP, description="input columns sharing one scale / zero point: 32, 64, 128 "
                                             "or 256")

    def __post_init__(self):
        if self.group_size not in (32, 64, 128, 256):
            raise ValueError(f"group_size must be one of 32, 64, 128, 256; got {self.group_size}")

    @property
    def label(self) -> str:
        return "int4_weight_only" + ("" if self.group_size == 128 else f"_g{self.group_size}")

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        reasons = super().not_supported_reasons(ctx) + torchao_reason()
        if ctx.device != "cuda":
            return reasons + [f"int4 weight-only needs a CUDA GPU (torchao has no {ctx.device} "
                              "kernel for its tile-packed int4 layout)"]
        if ctx.precision != "amp_bf16":
            reasons.append(f"int4 weight-only runs bf16 activations: use precision amp_bf16 "
                           f"(got {ctx.precision})")
        return reasons + capability_reason(ctx, (8, 0), "int4 weight-only (tensor-core int4 mm)")

    def compress(self, model, device: str, precision) -> None:
        from torchao.quantization import Int4WeightOnlyConfig
        from torchao.quantization.quantize_.workflows import Int4PackingFormat

        config = Int4WeightOnlyConfig(group_size=self.group_size,
                                      int4_packing_format=Int4PackingFormat.TILE_PACKED_TO_4D)
        self.quantize(model, config, precision)
