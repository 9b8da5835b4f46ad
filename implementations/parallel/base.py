"""What the parallel strategies share: how many ranks a point needs and how the model is wrapped."""
from __future__ import annotations

from implementations.registry import Strategy


class ParallelStrategy(Strategy):
    """Base of the parallel axis: ``nproc`` ranks (> 1 launches through torchrun) and
    ``wrap(model, optimizer, precision, micro_batch)`` -> what the train step drives."""

    @property
    def nproc(self) -> int:
        return 1

    def wrap(self, model, optimizer, precision, micro_batch: int = 1):
        raise NotImplementedError

    def deepspeed_ops(self, device: str) -> tuple[str, ...]:
        """DeepSpeed C++ op builders a rank JIT-compiles on ``device`` (built before the first
        point by ``harness.run.extensions``); none for a strategy without DeepSpeed."""
        return ()
