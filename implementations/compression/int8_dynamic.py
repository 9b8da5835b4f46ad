"""int8 dynamic quantization (activations and weights) through torchao."""
from __future__ import annotations

from implementations.registry import Context, register

from .base import CompressionStrategy, torchao_reason


@register("compression", "int8_dynamic")
class Int8DynamicCompression(CompressionStrategy):
    """torchao's ``Int8DynamicActivationInt8WeightConfig``: weights int8 per output channel, as
    int8 weight-only; activations quantized to int8 per token at run time (their scale computed
    on the fly), so the matmul itself runs in int8 with int32 accumulation. CPU and CUDA."""

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        return super().not_supported_reasons(ctx) + torchao_reason()

    def compress(self, model, device: str, precision) -> None:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        self.quantize(model, Int8DynamicActivationInt8WeightConfig(), precision)
