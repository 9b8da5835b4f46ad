"""Longformer attention: a (dilated) sliding window plus global tokens that see and are seen by
every position (Beltagy et al., 2020)."""
from __future__ import annotations

from typing import Annotated

import torch
from pydantic import BeforeValidator, Field

from implementations.attention.base import AttentionStrategy, diagonal_pairs
from implementations.attention.grid import Groups, Rows
from implementations.attention.local import chunk_groups
from implementations.registry import LENGTH_CAP, register


def is_global(x: torch.Tensor, leading: int, tokens: tuple[int, ...]) -> torch.Tensor:
    """Bool tensor like ``x``: position ``x`` is one of the ``leading`` first positions or in
    ``tokens`` (plain comparisons, so the rule also runs as a FlexAttention mask_mod)."""
    out = x < leading
    for p in tokens:
        out = out | (x == p)
    return out


@register("attention", "longformer")
class LongformerAttention(AttentionStrategy):
    """Longformer attention: a sliding window (every d-th key within w) plus global tokens.

    Query i sees key j iff |i - j| <= w and (i - j) % d == 0 (the sliding, optionally dilated
    window), or i or j is a global token.

    Global tokens are the ``n_global`` first positions plus ``global_tokens``; a global token
    attends to every key and every query attends to it. The window runs in overlapping chunks,
    each with the global keys appended to its candidates (O(S * (w + g))); the global queries run
    as whole rows (O(S * g)). The candidates ignore the dilation: a dilated window costs what
    the undilated one does (the dilation only masks). Decoding keeps every key and masks each
    step (O(S) per token: global keys stay readable forever).
    """

    length_params = ('window', 'dilation', 'n_global', 'global_tokens')  # in tokens: at most the model's max_seq_len

    window: int = Field(128, ge=0, le=LENGTH_CAP, description="w: query i sees keys j with |i - j| <= w")
    dilation: int = Field(1, ge=1, le=LENGTH_CAP, description="d: of the window, only keys with (i - j) % d == 0")
    n_global: int = Field(16, ge=0, le=LENGTH_CAP, description="the first n positions are global tokens")
    global_tokens: Annotated[tuple[int, ...], BeforeValidator(
        lambda v: tuple(v) if isinstance(v, list) else v)] = Field(
        (), description="more global token positions (>= 0)")

    def __post_init__(self):
        if any(p < 0 for p in self.global_tokens):
            raise ValueError(f"global_tokens must be positions >= 0; got {self.global_tokens}")

    @property
    def pattern_label(self) -> str:
        d = "" if self.dilation == 1 else f"_d{self.dilation}"
        extra = "".join(f"+{p}" for p in self.global_tokens)  # the positions: labels stay unique
        return f"longformer_w{self.window}{d}_g{self.n_global}{extra}"

    def globals_(self, S: int) -> list[int]:
        """The global positions of a length-``S`` sequence, sorted."""
        return sorted({p for p in range(min(self.n_global, S))} |
                      {p for p in self.global_tokens if p < S})

    def in_window(self, i, j):
        return ((i - j).abs() <= self.window) & (torch.remainder(i - j, self.dilation) == 0)

    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return (self.in_window(i, j) | is_global(i, self.n_global, self.global_tokens)
                | is_global(j, self.n_global, self.global_tokens))

    def groups(self, S: int, causal: bool) -> Groups:
        chunks = chunk_groups(S, self.window, causal)
        found = self.globals_(S)
        keys = chunks.k.positions()  # (G, Lk): the window's candidates
        if found:
            extra = torch.tensor(found, dtype=torch.long).expand(keys.shape[0], len(found))
            keys = torch.cat([keys, extra], dim=1)
        return Groups(chunks.q, Rows.of(keys), rows=tuple(found))

    def allowed_pairs(self, S: int, causal: bool) -> int:
        w, d = self.window, self.dilation
        window = diagonal_pairs(S, causal, step=d, reach=w)
        found = self.globals_(S)

        def reach(p: int, side: int) -> int:  # window keys (queries) strictly on one side of p
            return min(w, p if side < 0 else S - 1 - p) // d

        rows = sum(1 + reach(p, -1) + (0 if causal else reach(p, 1)) for p in found)
        cols = sum(1 + reach(p, 1) + (0 if causal else reach(p, -1)) for p in found)
        n = len(found)
        rows_b = sum(p + 1 if causal else S for p in found)
        cols_b = sum(S - p if causal else S for p in found)
        both_b = n * (n + 1) // 2 if causal else n * n
        both_window = sum(1 for i in found for j in found if abs(i - j) <= w
                          and (i - j) % d == 0 and (j <= i or not causal))
        in_b = rows_b + cols_b - both_b
        in_both = rows + cols - both_window
        return window + in_b - in_both

    def cache_policy(self):
        return None  # keep every key (global keys stay readable), mask each step
