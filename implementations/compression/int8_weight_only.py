"""int8 weight-only quantization through torchao (``Int8WeightOnlyConfig``)."""
from __future__ import annotations

from implementations.registry import Context, register

from .base import CompressionStrategy, torchao_reason


@register("compression", "int8_weight_only")
class Int8WeightOnlyCompression(CompressionStrategy):
    """Each compressible Linear weight becomes int8 with one fp scale per output row (symmetric,
    per-channel); activations stay in the compute dtype and the weight is dequantized inside
    the matmul. A quarter of fp32's weight bytes: the win is memory bandwidth (decode), not
    FLOPs. Runs wherever torchao's int8 tensor does: CPU and CUDA."""

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        return super().not_supported_reasons(ctx) + torchao_reason()

    def compress(self, model, device: str, precision) -> None:
        from torchao.quantization import Int8WeightOnlyConfig

        self.quantize(model, Int8WeightOnlyConfig(), precision)
