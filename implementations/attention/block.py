"""Block-diagonal attention: a query sees only the keys of its own block of ``block_size``."""
from __future__ import annotations

import torch
from pydantic import Field

from implementations.attention.base import AttentionStrategy
from implementations.attention.grid import Grid, Groups
from implementations.kv_cache import CachePolicy
from implementations.registry import LENGTH_CAP, register


@register("attention", "block")
class BlockAttention(AttentionStrategy):
    """Block attention: query i may attend to key j iff floor(i / b) == floor(j / b).

    The last block is partial when ``S % b != 0`` and is kept (its queries see its ``S % b`` keys).
    Each query sees ``b`` keys (``i % b + 1`` when causal). Runs as independent ``b x b``
    attentions over batched blocks: a reshape when ``S % b == 0`` (SDPA gets ``attn_mask=None`` or
    ``is_causal``), a padded gather otherwise. Time and memory O(S * b).
    """

    length_params = ('block_size',)  # in tokens: at most the model's max_seq_len

    block_size: int = Field(128, ge=1, le=LENGTH_CAP, description="keys per block b: query i sees keys j with "
                                                   "i // b == j // b")

    @property
    def pattern_label(self) -> str:
        return f"block_b{self.block_size}"

    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return torch.div(i, self.block_size, rounding_mode="floor") == torch.div(
            j, self.block_size, rounding_mode="floor")

    def groups(self, S: int, causal: bool) -> Groups:
        b = min(self.block_size, S)  # one block when b >= S
        n = -(-S // b)  # blocks, the last one possibly partial
        rows = Grid((n, b), (b, 1))  # block g: positions g b .. g b + b - 1; >= S: padding
        return Groups(rows, rows, full=True)

    def allowed_pairs(self, S: int, causal: bool) -> int:
        b = self.block_size
        full, rest = divmod(S, b)
        if causal:
            return full * b * (b + 1) // 2 + rest * (rest + 1) // 2
        return full * b * b + rest * rest

    def cache_policy(self) -> CachePolicy:
        return CachePolicy(keep=self.block_size, block=self.block_size)  # the current block only
