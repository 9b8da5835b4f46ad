"""none: one process, no data parallelism -- the default of the parallel axis."""
from __future__ import annotations

from implementations.parallel.base import ParallelStrategy
from implementations.registry import register


@register("parallel", "none")
class NoneParallel(ParallelStrategy):
    """Single process: the model and optimizer are used as built (nproc is always 1)."""

    def wrap(self, model, optimizer, precision=None, micro_batch: int = 1):
        """The model, untouched: the worker drives ``optimizer`` and precision itself."""
        return model
