"""amp_fp16: autocast to float16 with dynamic loss scaling (GradScaler)."""
from __future__ import annotations

import torch
from pydantic import Field

from implementations.regions import region
from implementations.registry import COUNT_CAP, Context, register

from .base import PrecisionStrategy, autocast_probe, device_type


@register("precision", "amp_fp16")
class AmpFP16Precision(PrecisionStrategy):
    """Automatic mixed precision in float16: ``torch.autocast`` + ``torch.amp.GradScaler``.

    float16's 5-bit exponent underflows small gradients, so the loss is multiplied by a scale
    before backward. When the scaled gradients overflow (inf/nan), ``scaler.step`` skips the
    optimizer step and ``scaler.update`` lowers the scale: a step counts as skipped exactly when
    the scale decreased across ``update()`` (read with ``get_scale()``, one host sync per step).
    Not supported where a probe autocast train step fails in float16 (some CPU builds).
    """

    parity_rtol: float = Field(2e-2, gt=0, lt=1, description="max relative loss difference vs the fp32 "
                                                                "reference")
    init_scale: float = Field(2.0 ** 16, gt=0, le=2.0 ** 64, description="GradScaler's initial loss scale")
    growth_interval: int = Field(2000, ge=1, le=COUNT_CAP, description="steps without overflow before the scale "
                                                         "doubles")

    compute_dtype = torch.float16
    math_format = "fp16"

    @property
    def label(self) -> str:
        out = "amp_fp16"
        if self.init_scale != 2.0 ** 16:
            out += f"_s{self.init_scale:g}"
        return out + (f"_g{self.growth_interval}" if self.growth_interval != 2000 else "")

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        reason = autocast_probe(ctx.device, torch.float16)
        return [reason] if reason else []

    def autocast(self, device: str):
        return torch.autocast(device_type(device), dtype=torch.float16)

    def make_scaler(self, device: str) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(device_type(device), init_scale=float(self.init_scale),
                                    growth_interval=self.growth_interval)

    def backward_step(self, loss, optimizer, scaler=None) -> bool:
        if scaler is None:
            raise ValueError("scaler: got None; allowed: the GradScaler from make_scaler(device)")
        with region("backward"):
            scaler.scale(loss).backward()
        with region("optimizer"):
            scaler.step(optimizer)  # skipped inside when the unscaled gradients hold inf/nan
            before = scaler.get_scale()
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        return scaler.get_scale() < before
