"""Attention strategies: which keys each query may attend to, and two ways to compute it.

    strategy.attend(q, k, v, *, causal, key_padding_mask=None, segment_ids=None, q_offset=0,
                    ops="eager", weights=None) -> (B, H, S_q, D)
    strategy.allowed(i, j) / dense_mask(S_q, S_k, causal, q_offset=0) / allowed_pairs(S, causal)

Build one from a plain dict with ``implementations.registry.create("attention", {"name": ...})``.
A new pattern is one file here (a frozen dataclass with ``allowed``, ``groups`` and
``allowed_pairs``) plus its import below; the contract tests pick it up from the registry. A
pattern that owns parameters (linformer) makes them with ``make_weights(max_len)``; each attention
layer keeps them and passes them back as ``weights``.
"""
from implementations.attention.atrous import AtrousAttention
from implementations.attention.base import AttentionStrategy
from implementations.attention.bigbird import BigBirdAttention
from implementations.attention.block import BlockAttention
from implementations.attention.dense import DenseAttention
from implementations.attention.linformer import LinformerAttention
from implementations.attention.local import LocalAttention
from implementations.attention.longformer import LongformerAttention
from implementations.attention.topk import TopKAttention

__all__ = ["AttentionStrategy", "AtrousAttention", "BigBirdAttention", "BlockAttention",
           "DenseAttention", "LinformerAttention", "LocalAttention", "LongformerAttention", "TopKAttention"]
