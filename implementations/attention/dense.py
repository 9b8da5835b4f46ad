"""Dense attention: every query may attend to every key (plus the causal rule and padding)."""
from __future__ import annotations

import torch

from implementations.attention.base import AttentionStrategy, diagonal_pairs
from implementations.kv_cache import CachePolicy
from implementations.registry import register


@register("attention", "dense")
class DenseAttention(AttentionStrategy):
    """Dense attention: query i may attend to every key j (j <= i when causal).

    eager: textbook ``softmax(q k^T / sqrt(D)) v`` materialising the ``(S_q, S_k)`` scores;
    fused: ``scaled_dot_product_attention`` with ``attn_mask=None`` / ``is_causal`` whenever that is
    exact (no padding, no segments), so the flash / memory-efficient kernels can be used.
    """

    everything_allowed = True

    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(i.shape, j.shape)
        return torch.ones(shape, dtype=torch.bool, device=i.device)

    def allowed_pairs(self, S: int, causal: bool) -> int:
        return diagonal_pairs(S, causal)  # S^2, or S (S + 1) / 2 when causal

    def cache_policy(self) -> CachePolicy:
        return CachePolicy()  # keep and read every key
