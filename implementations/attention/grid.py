"""How a sparse strategy splits a self-attention into groups, described in plain Python ints.

A :class:`Grid` is an affine grid of sequence positions (like the shape / strides / offset of a
strided view): the kernel turns it into a view of ``(B, H, S, D)`` without reading any tensor
value, so the grouped attention traces under ``torch.compile(fullgraph=True)`` with no graph
break. :class:`Groups` pairs the query grid with the candidate-key grid of the same groups.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class KernelNotSupported(NotImplementedError):
    """An attention kernel that cannot compute this call (a dtype, a pattern, padding); the
    harness records the point ``not_supported`` with the message."""


@dataclass(frozen=True)
class Grid:
    """Positions ``p[n_1, ..., n_d] = offset + sum_i n_i * strides[i]`` with ``0 <= n_i <
    shape[i]``. The last axis runs along one group (its ``length`` rows); the axes before it
    enumerate the groups (``count = prod(shape[:-1])``, 1 when there is no such axis). Positions
    outside ``[0, S)`` are padding: zero rows, never allowed as keys, dropped as queries."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]  # >= 1: every axis runs forwards
    offset: int = 0

    def __post_init__(self):
        if not self.shape or len(self.shape) != len(self.strides) or min(self.shape) < 1 \
                or min(self.strides) < 1:
            raise ValueError(f"Grid needs one stride >= 1 per axis of size >= 1; got "
                             f"shape={self.shape}, strides={self.strides}")

    @property
    def count(self) -> int:
        return math.prod(self.shape[:-1])

    @property
    def length(self) -> int:
        return self.shape[-1]

    @property
    def last(self) -> int:
        """The largest position (the smallest is ``offset``)."""
        return self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.strides))

    def dilated(self, k: int) -> Grid:
        """``k`` interleaved copies: new leading axis ``r`` (the residue), position ``r + k p``."""
        return Grid((k, *self.shape), (1, *(k * s for s in self.strides)), k * self.offset)

    def positions(self, device=None) -> torch.Tensor:
        """``(count, length)`` int64 positions (padding included, not clamped)."""
        pos = torch.full((), self.offset, dtype=torch.long, device=device)
        for axis, (n, s) in enumerate(zip(self.shape, self.strides)):
            view = [1] * len(self.shape)
            view[axis] = n
            pos = pos + s * torch.arange(n, device=device).view(view)  # broadcasts to shape
        return pos.reshape(self.count, self.length)


@dataclass(frozen=True, eq=False)
class Rows:
    """Explicit candidate positions, one row per group: for key sets no affine grid describes
    (global tokens, random blocks). Built with :meth:`of`, which sorts each row and turns a
    position listed twice into padding (``-1``), so every key is counted once."""

    index: torch.Tensor  # (count, length) int64; outside [0, S): padding
    shape: tuple[int, ...]  # (count, length)

    @classmethod
    def of(cls, index: torch.Tensor) -> Rows:
        index, _ = index.sort(-1)
        repeat = torch.zeros_like(index, dtype=torch.bool)
        repeat[:, 1:] = index[:, 1:] == index[:, :-1]
        index = index.masked_fill(repeat, -1)
        return cls(index, tuple(index.shape))

    @property
    def count(self) -> int:
        return self.shape[0]

    @property
    def length(self) -> int:
        return self.shape[1]

    def positions(self, device=None) -> torch.Tensor:
        return self.index.to(device)


@dataclass(frozen=True)
class Groups:
    """The groups of a sparse self-attention: ``q`` holds each query ``0..S-1`` exactly once,
    ``k`` (same group axes) the candidate keys of each group: every key a query may see (under
    the causal rule) is among its group's candidates, except for the queries of ``rows``
    (global tokens, which see every key): those are computed as whole rows, O(S) each."""

    q: Grid
    k: Grid | Rows
    full: bool = False  # every candidate key in [0, S) is allowed to every query of its group
    #                     (before the causal rule): no pattern mask needed without padding
    rows: tuple[int, ...] = ()  # queries computed as whole rows (their group's result dropped)

    def __post_init__(self):
        if self.q.shape[:-1] != self.k.shape[:-1] and self.q.count != self.k.count:
            raise ValueError(f"query and key grids need the same groups; got "
                             f"{self.q.shape[:-1]} and {self.k.shape[:-1]}")
        if isinstance(self.k, Rows) and self.full:
            raise ValueError("explicit key rows hold padding: they cannot be full")
