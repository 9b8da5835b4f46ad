"""every_n: one layer in n checkpointed -- a middle point between none and full."""
from __future__ import annotations

from pydantic import Field

from implementations.memory.base import MemoryStrategy
from implementations.registry import COUNT_CAP, register


@register("memory", "every_n")
class EveryNMemory(MemoryStrategy):
    """Checkpoint one layer in n: layers 0, n, 2n, ... of each stack.

    ``ceil(L / n)`` of ``L`` layers; ``n = 1`` is ``full``. Saves that share of the activations
    for that share of one forward's recomputation."""

    n: int = Field(2, ge=1, le=COUNT_CAP, description="checkpoint one layer in n (layers 0, n, 2n, ... of each stack)")

    @property
    def label(self) -> str:
        return f"every_n{self.n}"

    def parts(self, layer: int, n_layers: int) -> frozenset[str]:
        return frozenset({"block"}) if layer % self.n == 0 else frozenset()
