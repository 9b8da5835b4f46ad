"""What every padding strategy shares: the :class:`Batch` it hands the worker, the token source,
and :class:`PaddingStrategy`, whose ``make_batches`` checks the arguments and draws the sequences
before the strategy's own ``batch(seqs, ...)`` arranges them.

Token content does not depend on the strategy: sequence ``i`` (in the order of ``lengths``) always
holds the same tokens for a given seed, so the same sequence can be compared across strategies.
Each sequence of length ``L`` is drawn as ``L + 1`` ids in ``[FIRST_CONTENT_ID, vocab_size)``;
inputs are the first ``L``, targets the last ``L`` (next-token LM: every real input position has
a target). Ignored target positions (padding, after a sequence's end) hold ``IGNORE_INDEX``.
Sequences longer than ``max_length`` are truncated to their first ``max_length`` tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from implementations.registry import Strategy

IGNORE_INDEX = -100
FIRST_CONTENT_ID = 3  # ids 0..2 are reserved for pad / bos / eos


@dataclass
class Batch:
    """One step's input. Shapes (B, S); ``key_padding_mask`` True = real token."""

    tokens: torch.Tensor  # (B, S) long
    targets: torch.Tensor  # (B, S) long, IGNORE_INDEX where no loss is taken
    key_padding_mask: torch.Tensor | None  # (B, S) bool, None when every position is real
    segment_ids: torch.Tensor | None  # (B, S) long, packed rows only; padding has id 0
    position_ids: torch.Tensor | None  # (B, S) long, packed rows only; restart at 0 per sequence
    real_tokens: int  # positions holding a real token
    processed_tokens: int  # positions the model computes on (B * S)

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.processed_tokens

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.tokens), move(self.targets), move(self.key_padding_mask),
                     move(self.segment_ids), move(self.position_ids),
                     self.real_tokens, self.processed_tokens)


def check_args(lengths, batch_size: int, max_length: int, vocab_size: int) -> None:
    """Raise ValueError naming the argument when the worker's call cannot make batches."""
    if not lengths or any(not isinstance(n, (int, np.integer)) or n < 1 for n in lengths):
        raise ValueError(f"lengths: got {lengths!r:.80}; allowed: a non-empty list of ints >= 1")
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: got {value!r}; allowed: an int >= 1")
    if not isinstance(vocab_size, int) or vocab_size <= FIRST_CONTENT_ID:
        raise ValueError(f"vocab_size: got {vocab_size!r}; allowed: an int > {FIRST_CONTENT_ID}")


def make_sequences(lengths, max_length: int, vocab_size: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) per sequence, both of length ``min(L, max_length)``; independent of batching."""
    rng = np.random.default_rng(seed)
    flat = rng.integers(FIRST_CONTENT_ID, vocab_size, size=sum(int(n) + 1 for n in lengths))
    out, start = [], 0
    for n in lengths:
        ids = flat[start:start + int(n) + 1]
        start += int(n) + 1
        keep = min(int(n), max_length)
        out.append((ids[:keep], ids[1:keep + 1]))
    return out


def pad_rows(seqs, width: int, pad_id: int) -> Batch:
    """Right-pad each sequence to ``width`` (one row each): padding masked out of attention and loss."""
    tokens = np.full((len(seqs), width), pad_id, dtype=np.int64)
    targets = np.full((len(seqs), width), IGNORE_INDEX, dtype=np.int64)
    real = np.zeros((len(seqs), width), dtype=bool)
    for row, (inp, tgt) in enumerate(seqs):
        tokens[row, :len(inp)], targets[row, :len(tgt)], real[row, :len(inp)] = inp, tgt, True
    mask = None if real.all() else torch.from_numpy(real)
    return Batch(torch.from_numpy(tokens), torch.from_numpy(targets), mask, None, None,
                 real_tokens=int(real.sum()), processed_tokens=real.size)


def padded_width(longest: int, multiple: int, max_length: int) -> int:
    """``longest`` rounded up to a multiple of ``multiple`` (tensor-core friendly), capped at max_length."""
    return min(-(-longest // multiple) * multiple, max_length)


class PaddingStrategy(Strategy):
    """Base of the padding axis: ``make_batches`` = argument checks + the seeded sequences (the same
    tokens whatever the strategy) + the strategy's ``batch``."""

    def make_batches(self, lengths, batch_size, max_length, vocab_size, seed, pad_id) -> list[Batch]:
        """``lengths`` (one per sequence, truncated to ``max_length``) -> the point's batches."""
        check_args(lengths, batch_size, max_length, vocab_size)
        seqs = make_sequences(lengths, max_length, vocab_size, seed)
        return self.batch(seqs, batch_size, max_length, seed, pad_id)

    def batch(self, seqs, batch_size: int, max_length: int, seed: int, pad_id: int) -> list[Batch]:
        """Arrange ``seqs`` ((inputs, targets) pairs, in ``lengths`` order) into batches."""
        raise NotImplementedError
