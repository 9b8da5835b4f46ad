"""Sliding-window (local) attention: a query sees the keys within ``window`` positions."""
from __future__ import annotations

import torch
from pydantic import Field

from implementations.attention.base import AttentionStrategy, diagonal_pairs
from implementations.attention.grid import Grid, Groups
from implementations.kv_cache import CachePolicy
from implementations.registry import LENGTH_CAP, register


def chunk_groups(n: int, w: int, causal: bool, chunk: int | None = None) -> Groups:
    """Query chunks of positions ``0..n-1`` with the keys a window ``w`` can reach.

    Chunk ``[s, s + c)`` gets keys ``[s - w, s + c + w)`` (``[s - w, s + c)`` when causal), so
    each query pays ``c + 2w`` (``c + w``) scores for its ``2w + 1`` (``w + 1``) keys. Positions
    outside ``[0, n)`` are padding. The default chunk is ``w`` (at least 8): each chunk's keys
    are then 3 (causal: 2) whole chunks, which the kernel takes as a view with a cheap backward
    (``kernel.TiledWindows``); smaller chunks waste fewer scores but cost more per group
    (``w // 2`` was 1.5x slower to train at S=4096, w=128 on CPU).
    """
    w = min(w, max(n - 1, 0))  # a window past the sequence reaches no further keys
    c = min(chunk or max(w, 8), n)
    G = -(-n // c)  # chunks, the last one possibly partial
    q = Grid((G, c), (c, 1))  # chunk g: queries g c .. g c + c - 1
    k = Grid((G, c + w + (0 if causal else w)), (c, 1), offset=-w)  # keys from g c - w
    return Groups(q, k)


@register("attention", "local")
class LocalAttention(AttentionStrategy):
    """Local attention: query i may attend to key j iff |i - j| <= w.

    So ``2w + 1`` keys per query (``w + 1`` when causal), fewer at the sequence ends; ``w = 0``
    is valid: each query sees only itself. Runs over
    overlapping chunks (queries in chunks of ``max(w, 8)``, keys extended by ``w`` each side)
    with a small per-chunk mask. Time and memory O(S * w).
    """

    length_params = ('window',)  # in tokens: at most the model's max_seq_len

    window: int = Field(128, ge=0, le=LENGTH_CAP, description="w: query i sees keys j with |i - j| <= w (2w + 1 keys, "
                                               "w + 1 causal; 0: only itself)")

    @property
    def pattern_label(self) -> str:
        return f"local_w{self.window}"

    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return (i - j).abs() <= self.window

    def groups(self, S: int, causal: bool) -> Groups:
        return chunk_groups(S, self.window, causal)

    def allowed_pairs(self, S: int, causal: bool) -> int:
        return diagonal_pairs(S, causal, reach=self.window)

    def cache_policy(self) -> CachePolicy:
        return CachePolicy(keep=self.window + 1)  # a ring of the last w + 1 keys, all read
