"""Dynamic padding: each batch padded to its own longest sequence."""
from __future__ import annotations

from pydantic import Field

from implementations.registry import LENGTH_CAP, register

from .base import Batch, PaddingStrategy, pad_rows, padded_width


@register("padding", "dynamic")
class DynamicPadding(PaddingStrategy):
    """Pad each batch to its longest sequence (rounded up to ``pad_to_multiple``), order kept.

    Batches keep the order of ``lengths`` (no sorting), so one long sequence still pads its
    whole batch; sequences longer than max_length are truncated.
    """

    pad_to_multiple: int = Field(1, ge=1, le=LENGTH_CAP, description="round each batch's width up to a multiple of "
                                                      "this (8 suits tensor cores)")

    @property
    def label(self) -> str:
        return "dynamic" if self.pad_to_multiple == 1 else f"dynamic_m{self.pad_to_multiple}"

    def batch(self, seqs, batch_size, max_length, seed, pad_id) -> list[Batch]:
        batches = []
        for i in range(0, len(seqs), batch_size):
            group = seqs[i:i + batch_size]
            width = padded_width(max(len(inp) for inp, _ in group), self.pad_to_multiple, max_length)
            batches.append(pad_rows(group, width, pad_id))
        return batches
