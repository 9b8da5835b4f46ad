"""Packing ("input padding removal"): several whole sequences share a row, attention block-diagonal."""
from __future__ import annotations

import bisect

import numpy as np
import torch
from pydantic import Field

from implementations.registry import register

from .base import IGNORE_INDEX, Batch, PaddingStrategy


def _assign_rows(sizes: list[int], width: int, best_fit: bool) -> list[list[int]]:
    """Sequence indices per row, each row's total <= width."""
    rows: list[list[int]] = []
    if not best_fit:  # next fit, input order: start a new row when the next one does not fit
        room = 0
        for i, n in enumerate(sizes):
            if n > room:
                rows.append([])
                room = width
            rows[-1].append(i)
            room -= n
        return rows
    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):  # longest first
        k = bisect.bisect_left(free, (sizes[i], -1))  # tightest row that still fits
        if k == len(free):
            rows.append([])
            room, row = width, len(rows) - 1
        else:
            room, row = free.pop(k)
        rows[row].append(i)
        bisect.insort(free, (room - sizes[i], row))
    return rows


@register("padding", "packed")
class PackedPadding(PaddingStrategy):
    """Concatenate whole sequences into rows of max_length; no sequence attends to another.

    Each row holds several sequences back to back. ``segment_ids`` number them 1, 2, ... within
    the row (tail padding has id 0 and is also False in ``key_padding_mask``), so attention is
    block-diagonal (and causal inside a block); ``position_ids`` restart at 0 for each sequence,
    and each sequence's targets are its own next tokens, so no target crosses a boundary. A
    sequence is never split: one longer than max_length is truncated to max_length. Rows are
    filled best-fit-decreasing (longest sequence first, into the row it fills tightest); the only
    padding is at the tail of rows, counted in ``processed_tokens``. Batches are
    ``batch_size`` rows, so a packed workload has fewer batches than a padded one.
    """

    best_fit: bool = Field(True, description="best-fit-decreasing rows; false = next-fit in input order")

    @property
    def label(self) -> str:
        return "packed" if self.best_fit else "packed_nextfit"

    def batch(self, seqs, batch_size, max_length, seed, pad_id) -> list[Batch]:
        rows = _assign_rows([len(inp) for inp, _ in seqs], max_length, self.best_fit)
        return [self._row_batch([[seqs[i] for i in row] for row in rows[b:b + batch_size]], max_length, pad_id)
                for b in range(0, len(rows), batch_size)]

    @staticmethod
    def _row_batch(rows, width: int, pad_id: int) -> Batch:
        shape = (len(rows), width)
        tokens = np.full(shape, pad_id, dtype=np.int64)
        targets = np.full(shape, IGNORE_INDEX, dtype=np.int64)
        segments = np.zeros(shape, dtype=np.int64)
        positions = np.zeros(shape, dtype=np.int64)
        for r, row in enumerate(rows):
            at = 0
            for seg, (inp, tgt) in enumerate(row, start=1):
                end = at + len(inp)
                tokens[r, at:end], targets[r, at:end] = inp, tgt
                segments[r, at:end], positions[r, at:end] = seg, np.arange(len(inp))
                at = end
        real = segments > 0
        mask = None if real.all() else torch.from_numpy(real)
        return Batch(torch.from_numpy(tokens), torch.from_numpy(targets), mask,
                     torch.from_numpy(segments), torch.from_numpy(positions),
                     real_tokens=int(real.sum()), processed_tokens=real.size)
