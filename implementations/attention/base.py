"""The attention-strategy contract shared by every pattern.

A strategy is a frozen dataclass that says which keys ``j`` a query ``i`` may attend to
(:meth:`allowed`), combined with an optional causal rule (``j <= i`` in absolute positions) and
an optional key-padding mask. Everything else (the reference mask, the exact FLOP-relevant pair
count, the two implementations) follows from that rule and from :meth:`groups`, the partition of
queries into small groups with candidate keys that a sparse strategy uses to stay O(S * keys).

Layout everywhere: ``(B, H, S, D)`` (batch, heads, sequence, head dim). Masks are bool,
``True`` = may attend.
"""
from __future__ import annotations

import torch

from implementations.attention import kernel
from implementations.attention.grid import Groups
from implementations.registry import Strategy


def diagonal_pairs(S: int, causal: bool, step: int = 1, reach: int | None = None) -> int:
    """Exact count of ``(i, j)`` in ``[0, S)^2`` with ``(i - j) % step == 0`` and
    ``|i - j| <= reach`` (no limit when ``None``), and ``j <= i`` when ``causal``."""
    top = S - 1 if reach is None else min(reach, S - 1)
    n = max(top, 0) // step  # diagonals d = step, 2 step, ..., n step on each side
    off = n * S - step * n * (n + 1) // 2  # sum over those d of (S - d)
    return S + (1 if causal else 2) * off


class AttentionStrategy(Strategy):
    """Base class of the patterns: each one a class registered with ``@register("attention", name)``
    (which makes it a frozen, validated dataclass)."""

    everything_allowed = False  # True for dense: the causal rule is the only mask

    # --- the rule -------------------------------------------------------------------------
    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Bool tensor, broadcast of ``i`` and ``j``: may query position ``i`` see key
        position ``j`` (before the causal rule and padding)."""
        raise NotImplementedError

    def groups(self, S: int, causal: bool) -> Groups | None:
        """Partition of the ``S`` queries of a self-attention into groups, with candidate keys.

        Returns a :class:`~implementations.attention.grid.Groups` of two affine position grids
        (plain ints, so the kernel takes views and traces under ``torch.compile`` without graph
        breaks): every query ``0..S-1`` appears exactly once in ``q``, laid out as a permutation
        of the axes of a row-major ``0..N-1`` (``N >= S``, positions ``>= S`` being padding), and
        the keys each query may see (under ``causal``) are among its group's ``k``. ``None``
        (dense) means one group holding everything.
        """
        return None

    def allowed_pairs(self, S: int, causal: bool) -> int:
        """Exact number of allowed ``(query, key)`` pairs of a length-``S`` self-attention."""
        raise NotImplementedError

    def cache_policy(self):
        """What a causal decode step must keep and read (``implementations.kv_cache``), or
        None: keep every key and mask each step (correct, O(S) per token)."""
        return None

    # --- derived (every pattern runs on CPU and CUDA in every dtype SDPA supports) --------
    def dense_mask(self, S_q: int, S_k: int, causal: bool, q_offset: int = 0,
                   device=None) -> torch.Tensor:
        """Reference ``(S_q, S_k)`` bool mask: query ``r`` is absolute position ``q_offset + r``;
        key ``j`` is allowed iff ``allowed(i, j)`` and (if ``causal``) ``j <= i``. O(S_q * S_k)."""
        i = torch.arange(S_q, device=device)[:, None] + q_offset  # (S_q, 1)
        j = torch.arange(S_k, device=device)[None, :]  # (1, S_k)
        mask = self.allowed(i, j).expand(S_q, S_k)
        return mask & (j <= i) if causal else mask.clone()

    def attend(self, q, k, v, *, causal: bool, key_padding_mask=None, segment_ids=None,
               q_offset: int = 0, ops: str = "eager") -> torch.Tensor:
        """Attention under this pattern. Returns ``(B, H, S_q, D)``.

        q ``(B, H, S_q, D)``; k, v ``(B, H, S_k, D)``; ``key_padding_mask`` ``(B, S_k)`` bool,
        True = real token; ``segment_ids`` ``(B, S_k)`` int, one id per absolute position: query
        ``q_offset + r`` sees only keys with its id; ``q_offset`` = absolute position of query 0
        (decoding with a KV cache: ``S_q = 1, q_offset = S_k - 1``); ``ops``: ``"eager"`` (plain
        tensor ops, textbook matmul-softmax-matmul) or ``"fused"``
        (``scaled_dot_product_attention``). A query with no allowed key returns zeros.

        Self-attention (``S_q == S_k``, ``q_offset == 0``) of a sparse pattern runs group by group
        (never an ``S x S`` score matrix); any other shape (decoding, cross-attention) uses one
        ``(S_q, S_k)`` mask, which is O(S) per decoded token.
        """
        kernel.check_inputs(q, k, v, key_padding_mask, segment_ids, q_offset, ops)
        S_q, S_k = q.shape[-2], k.shape[-2]
        if S_q == S_k and q_offset == 0:
            plan = kernel.plan_for(self, S_q, bool(causal), q.device, q.dtype)
            if plan is not None:
                return kernel.grouped_attention(plan, q, k, v, key_padding_mask, segment_ids, ops)
        return kernel.masked_attention(self, q, k, v, bool(causal), key_padding_mask, segment_ids,
                                       q_offset, ops)
