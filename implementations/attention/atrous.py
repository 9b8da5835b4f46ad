"""Dilated (atrous) attention: a query sees every k-th key, optionally within a window."""
from __future__ import annotations

import torch
from pydantic import Field

from implementations.attention.base import AttentionStrategy, diagonal_pairs
from implementations.attention.grid import Grid, Groups
from implementations.attention.local import chunk_groups
from implementations.kv_cache import CachePolicy
from implementations.registry import LENGTH_CAP, register


@register("attention", "atrous")
class AtrousAttention(AttentionStrategy):
    """Atrous attention: query i may attend to key j iff (i - j) mod k == 0 (and |i - j| <= w
    when a window is given).

    Positions with the same residue ``i mod k`` form ``k`` interleaved sub-sequences of length
    ``ceil(S / k)``; attention runs inside each one: dense (O(S^2 / k)) without a window, local
    with window ``w // k`` in sub-sequence steps (O(S * w / k)) with one. ``dilation=1`` with a
    window is exactly ``local``.
    """

    length_params = ('dilation', 'window')  # in tokens: at most the model's max_seq_len

    dilation: int = Field(2, ge=1, le=LENGTH_CAP, description="k: query i sees keys j with (i - j) % k == 0")
    window: int | None = Field(None, ge=0, le=LENGTH_CAP, description="w: also |i - j| <= w; None = no window")

    @property
    def pattern_label(self) -> str:
        return f"atrous_k{self.dilation}" + ("" if self.window is None else f"_w{self.window}")

    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        ok = torch.remainder(i - j, self.dilation) == 0
        return ok if self.window is None else ok & ((i - j).abs() <= self.window)

    def groups(self, S: int, causal: bool) -> Groups:
        k = self.dilation
        m = -(-S // k)  # sub-sequence length; step t of residue r is position r + k t
        if self.window is None:  # one group per residue: the whole sub-sequence
            steps = Grid((m,), (1,))
            sub = Groups(steps, steps, full=True)
        else:  # |i - j| <= w  <=>  |steps apart| <= w // k: local chunks in steps
            sub = chunk_groups(m, self.window // k, causal)
        # (k, ..., L): residue axis first; steps past m are positions past S: padding
        return Groups(sub.q.dilated(k), sub.k.dilated(k), full=sub.full)

    def allowed_pairs(self, S: int, causal: bool) -> int:
        return diagonal_pairs(S, causal, step=self.dilation, reach=self.window)

    def cache_policy(self) -> CachePolicy:
        """Reads every k-th key back; keeps every key without a window (later queries of every
        residue read them), else a ring of k (floor(w / k) + 1) >= w + 1 positions."""
        k = self.dilation
        keep = None if self.window is None else k * (self.window // k + 1)
        return CachePolicy(keep=keep, stride=k)
