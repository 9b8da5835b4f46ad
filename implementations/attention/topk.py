"""Top-k (content-based) sparse attention: each query keeps its k highest-scoring keys."""
from __future__ import annotations

import torch
from pydantic import Field

from implementations.attention import kernel
from implementations.attention.grid import KernelNotSupported
from implementations.attention.base import AttentionStrategy, diagonal_pairs
from implementations.regions import region
from implementations.registry import LENGTH_CAP, register


@register("attention", "topk")
class TopKAttention(AttentionStrategy):
    """Top-k attention: each query attends to its k highest-scoring keys (content-based).

    The keys are chosen by score, so **every score is still computed**: O(S^2) FLOPs, no saving
    over dense (the FLOP count charges all ``q k^T`` products and ``k`` value products per
    query). What it bounds is the softmax and the value product (``k`` keys per query) and the
    memory of a forward pass: queries run in chunks of ``chunk``, so only a ``(chunk, S)`` score
    block and the ``(S, k)`` kept scores exist at a time, never an ``S x S`` matrix. Training
    also saves the gathered values, ``(S, k, D)`` per head. The causal rule, key padding and
    segments are applied before the selection; a query with fewer than ``k`` allowed keys keeps
    them all; ties at the k-th score are broken by ``torch.topk``. ``ops`` has no effect (the
    kernel is plain tensor ops); any ``kernel`` but ``auto`` is ``not_supported``: its keys are
    not a positional rule, so no mask, FlexAttention block mask or flash_attn window can express
    them. Decoding
    keeps every key (any of them may score in the top k later).
    """

    length_params = ('k', 'chunk')  # in tokens: at most the model's max_seq_len

    refuses = "any kernel but auto (keys chosen by score: no positional rule)"

    k: int = Field(64, ge=1, le=LENGTH_CAP, description="keys kept per query (the highest scores)")
    chunk: int = Field(128, ge=1, le=LENGTH_CAP, description="queries scored at a time (memory: chunk x S scores)")

    def not_supported_reasons(self, ctx) -> list[str]:
        if self.kernel != "auto":
            return [f"topk picks keys by score: no positional rule for the {self.kernel} kernel "
                    "(auto only)"]
        return []

    @property
    def pattern_label(self) -> str:
        chunk = "" if self.chunk == 128 else f"_c{self.chunk}"
        return f"topk_k{self.k}{chunk}"

    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Every key is a candidate; which ones are kept depends on the scores."""
        return torch.ones(torch.broadcast_shapes(i.shape, j.shape), dtype=torch.bool,
                          device=i.device)

    def allowed_pairs(self, S: int, causal: bool) -> int:
        """Pairs attended (softmax and value product): ``min(k, candidates)`` per query."""
        if not causal:
            return S * min(self.k, S)
        full = max(S - self.k, 0)  # queries k-1 .. S-1 keep k keys; earlier ones i + 1
        return full * self.k + diagonal_pairs(min(self.k, S), True)

    def scored_pairs(self, S: int, causal: bool) -> int:
        return diagonal_pairs(S, causal)  # every score, to find the top k

    def cache_policy(self):
        return None

    def attend(self, q, k, v, *, causal: bool, key_padding_mask=None, segment_ids=None,
               q_offset: int = 0, ops: str = "eager", weights=None) -> torch.Tensor:
        if self.kernel != "auto":  # refused up front for a point; a direct call refuses too
            raise KernelNotSupported(self.not_supported_reasons(None)[0])
        kernel.check_inputs(q, k, v, key_padding_mask, segment_ids, q_offset, ops)
        B, H, S_q, D = q.shape
        k, v = kernel.repeat_kv(k, H), kernel.repeat_kv(v, H)  # GQA
        S_k = k.shape[2]
        keep = min(self.k, S_k)
        j = torch.arange(S_k, device=q.device)
        outs = []
        for start in range(0, S_q, self.chunk):
            rows = torch.arange(start, min(start + self.chunk, S_q), device=q.device) + q_offset
            with region("attention", "scores"):
                scores = (q[:, :, start:start + len(rows)] * D ** -0.5) @ k.transpose(-2, -1)
            with region("attention", "mask"):
                allowed = (j <= rows[:, None]) if causal else None  # (c, S_k)
                seg_q = None if segment_ids is None else segment_ids.index_select(1, rows)
                extra = kernel._batch_mask(key_padding_mask, segment_ids, seg_q)
                if extra is not None:
                    allowed = extra if allowed is None else allowed & extra
                if allowed is not None:
                    scores = scores.masked_fill(~allowed, float("-inf"))
            with region("attention", "softmax"):
                top, index = scores.topk(keep, dim=-1)  # (B, H, c, keep)
                del scores
                empty = torch.isneginf(top[..., :1])  # no allowed key at all
                probs = top.masked_fill(empty, 0.0).softmax(-1)  # -inf (fewer keys): weight 0
            with region("attention", "value"):
                picked = v.gather(2, index.flatten(2)[..., None].expand(-1, -1, -1, D))
                picked = picked.view(B, H, len(rows), keep, D)  # (B, H, c, keep, D)
                outs.append((probs[..., None] * picked).sum(-2).masked_fill(empty, 0.0))
        return torch.cat(outs, dim=2)
