"""full: every layer checkpointed -- only each layer's input is kept across the forward."""
from __future__ import annotations

from implementations.memory.base import MemoryStrategy
from implementations.registry import register


@register("memory", "full")
class FullMemory(MemoryStrategy):
    """Checkpoint every block: each keeps only its input; the backward runs its forward again.

    A block keeps its input ``(B, S, C)`` (and the memory of cross-attention) until the
    backward, which runs the block's forward again.

    Activation memory falls from ``L`` layers' saved tensors to ``L`` inputs plus one layer's
    saved tensors (the one being recomputed); the cost is one more forward of every block
    (training FLOPs ~ 4x forward instead of 3x, the LM head excepted).
    """

    def parts(self, layer: int, n_layers: int) -> frozenset[str]:
        return frozenset({"block"})
