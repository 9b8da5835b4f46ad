"""Fixed-length padding: every sequence padded (or truncated) to ``max_length``."""
from __future__ import annotations

from dataclasses import dataclass

from implementations.registry import Context, register

from .base import Batch, check_args, make_sequences, pad_rows


@register("padding", "fixed")
@dataclass(frozen=True)
class Fixed:
    """Pad or truncate every sequence to max_length; batches keep the order of ``lengths``.

    The baseline of the padding axis: every batch is (batch_size, max_length), so its padding
    efficiency is mean(length) / max_length. Padding is masked by ``key_padding_mask`` (None when
    a batch has no padding) and ignored by the loss (targets = -100).
    """

    @property
    def label(self) -> str:
        return "fixed"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        return []

    def make_batches(self, lengths, batch_size, max_length, vocab_size, seed, pad_id) -> list[Batch]:
        check_args(lengths, batch_size, max_length, vocab_size)
        seqs = make_sequences(lengths, max_length, vocab_size, seed)
        return [pad_rows(seqs[i:i + batch_size], max_length, pad_id)
                for i in range(0, len(seqs), batch_size)]
