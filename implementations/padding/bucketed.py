"""Bucketed (length-grouped) batching: similar lengths share a batch, batches then shuffled."""
from __future__ import annotations

import numpy as np
from pydantic import Field

from implementations.registry import COUNT_CAP, LENGTH_CAP, register

from .base import Batch, PaddingStrategy, pad_rows, padded_width


@register("padding", "bucketed")
class BucketedPadding(PaddingStrategy):
    """Sort sequences by length, cut into batches, pad each to its longest, shuffle the batches.

    With ``pool_batches = 0`` the whole set is sorted (least padding). With ``pool_batches = k``
    sequences are sorted only within consecutive pools of ``k * batch_size`` (the usual
    "sortish" sampler: keeps some randomness in which sequences meet, at a little more padding).
    The batch order is shuffled with ``numpy.random.default_rng([seed, 1])`` so long and short
    batches alternate as in training.
    """

    pool_batches: int = Field(0, ge=0, le=COUNT_CAP, description="sort within pools of this many batches; 0 = sort "
                                                   "everything")
    pad_to_multiple: int = Field(1, ge=1, le=LENGTH_CAP, description="round each batch's width up to a multiple of this")
    shuffle: bool = Field(True, description="shuffle the order of the batches with the seed")

    @property
    def label(self) -> str:
        out = "bucketed" if self.pool_batches == 0 else f"bucketed_p{self.pool_batches}"
        return out + (f"_m{self.pad_to_multiple}" if self.pad_to_multiple != 1 else "")

    def batch(self, seqs, batch_size, max_length, seed, pad_id) -> list[Batch]:
        pool = len(seqs) if self.pool_batches == 0 else self.pool_batches * batch_size
        order = []
        for start in range(0, len(seqs), pool):
            idx = range(start, min(start + pool, len(seqs)))
            order += sorted(idx, key=lambda i: len(seqs[i][0]))  # stable: ties keep input order
        batches = []
        for i in range(0, len(order), batch_size):
            group = [seqs[j] for j in order[i:i + batch_size]]
            width = padded_width(max(len(inp) for inp, _ in group), self.pad_to_multiple, max_length)
            batches.append(pad_rows(group, width, pad_id))
        if self.shuffle:
            perm = np.random.default_rng([seed, 1]).permutation(len(batches))
            batches = [batches[k] for k in perm]
        return batches
