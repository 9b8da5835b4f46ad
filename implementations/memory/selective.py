"""selective: only the attention modules, or only the FFNs, checkpointed in every layer."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from implementations.memory.base import MemoryStrategy
from implementations.registry import register


@register("memory", "selective")
class SelectiveMemory(MemoryStrategy):
    """Checkpoint only the attention modules, or only the FFNs, of every layer.

    Korthikanti et al. 2022 recompute the attention core, whose saved scores grow as S^2, and
    keep the cheap-to-store rest.

    ``part = "attention"``: the self- (and cross-) attention modules, projections included, keep
    only their input; eager dense attention then no longer holds ``(B, H, S, S)`` scores and
    probabilities per layer. ``part = "ffn"``: the FFN keeps only its input, not the
    ``(B, S, d_ff)`` hidden activation. Norms and residuals are kept in both cases.
    """

    part: Literal["attention", "ffn"] = Field("attention", description="which sub-layer is recomputed: "
                                                                       "attention or ffn")

    @property
    def label(self) -> str:
        return f"selective_{self.part}"

    def parts(self, layer: int, n_layers: int) -> frozenset[str]:
        return frozenset({self.part})
