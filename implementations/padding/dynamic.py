"""Dynamic padding: each batch padded to its own longest sequence."""
from __future__ import annotations

from dataclasses import dataclass

from implementations.registry import Context, param, register

from .base import Batch, check_args, check_multiple, make_sequences, pad_rows, padded_width


@register("padding", "dynamic")
@dataclass(frozen=True)
class Dynamic:
    """Pad each batch to its longest sequence (rounded up to ``pad_to_multiple``), order kept.

    Batches keep the order of ``lengths`` (no sorting), so one long sequence still pads its
    whole batch; sequences longer than max_length are truncated.
    """

    pad_to_multiple: int = param(1, "round each batch's width up to a multiple of this (8 suits tensor cores)")

    def __post_init__(self):
        check_multiple(self.pad_to_multiple)

    @property
    def label(self) -> str:
        return "dynamic" if self.pad_to_multiple == 1 else f"dynamic_m{self.pad_to_multiple}"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        return []

    def make_batches(self, lengths, batch_size, max_length, vocab_size, seed, pad_id) -> list[Batch]:
        check_args(lengths, batch_size, max_length, vocab_size)
        seqs = make_sequences(lengths, max_length, vocab_size, seed)
        batches = []
        for i in range(0, len(seqs), batch_size):
            group = seqs[i:i + batch_size]
            width = padded_width(max(len(inp) for inp, _ in group), self.pad_to_multiple, max_length)
            batches.append(pad_rows(group, width, pad_id))
        return batches
