"""none: one process, no data parallelism -- the default of the parallel axis."""
from __future__ import annotations

from dataclasses import dataclass

from implementations.registry import Context, register


@register("parallel", "none")
@dataclass(frozen=True)
class NoParallel:
    """Single process: the model and optimizer are used as built (nproc is always 1)."""

    @property
    def nproc(self) -> int:
        return 1

    @property
    def label(self) -> str:
        return "none"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        return []

    def wrap(self, model, optimizer, precision_label: str = "fp32", micro_batch: int = 1):
        """The model, untouched: the worker drives ``optimizer`` and precision itself."""
        return model
