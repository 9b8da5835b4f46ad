"""float8 (e4m3) dynamic quantization of activations and weights through torchao."""
from __future__ import annotations

from implementations.precision.base import capability_reason
from implementations.registry import Context, register

from .base import CompressionStrategy, torchao_reason


@register("compression", "float8")
class Float8Compression(CompressionStrategy):
    """torchao's ``Float8DynamicActivationFloat8WeightConfig``: weights and activations in
    float8 e4m3 with per-tensor scales, the matmul on float8 tensor cores (``torch._scaled_mm``).
    CUDA compute capability >= 8.9 (Ada, Hopper and later) only, which is torchao's own rule; on
    CPU or older GPUs it is not supported."""

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        reasons = super().not_supported_reasons(ctx) + torchao_reason()
        if ctx.device != "cuda":
            return reasons + [f"float8 matmuls need an NVIDIA GPU of compute capability >= 8.9 "
                              f"(device is {ctx.device})"]
        return reasons + capability_reason(ctx, (8, 9), "float8 (e4m3 tensor cores)")

    def compress(self, model, device: str, precision) -> None:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig

        self.quantize(model, Float8DynamicActivationFloat8WeightConfig(), precision)
