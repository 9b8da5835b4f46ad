"""Fixed-length padding: every sequence padded (or truncated) to ``max_length``."""
from __future__ import annotations

from implementations.registry import register

from .base import Batch, PaddingStrategy, pad_rows


@register("padding", "fixed")
class FixedPadding(PaddingStrategy):
    """Pad or truncate every sequence to max_length; batches keep the order of ``lengths``.

    The baseline of the padding axis: every batch is (batch_size, max_length), so its padding
    efficiency is mean(length) / max_length. Padding is masked by ``key_padding_mask`` (None when
    a batch has no padding) and ignored by the loss (targets = -100).
    """

    def batch(self, seqs, batch_size, max_length, seed, pad_id) -> list[Batch]:
        return [pad_rows(seqs[i:i + batch_size], max_length, pad_id)
                for i in range(0, len(seqs), batch_size)]
