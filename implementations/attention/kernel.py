"""Kernels shared by every attention strategy.

* :func:`inner_attention`: softmax(q k^T / sqrt(D)) v over small or large blocks, eager
  (textbook matmul-softmax-matmul) or fused (``scaled_dot_product_attention``), with the
  empty-row rule: a query with no allowed key returns zeros, with finite gradients.
* :func:`masked_attention`: one ``(S_q, S_k)`` mask (dense, decoding, cross-attention).
* :func:`grouped_attention`: a sparse self-attention run group by group from a :class:`Plan`
  (see ``AttentionStrategy.groups``), so no ``S x S`` score matrix is ever built.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from implementations.attention.base import OPS


def check_inputs(q, k, v, key_padding_mask, segment_ids, q_offset, ops) -> None:
    if ops not in OPS:
        raise ValueError(f"attention ops must be one of {', '.join(OPS)}; got {ops!r}")
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape or q.shape[:2] != k.shape[:2] \
            or q.shape[-1] != k.shape[-1]:
        raise ValueError("attention expects q (B, H, S_q, D), k and v (B, H, S_k, D); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, S_k = k.shape[0], k.shape[2]
    if key_padding_mask is not None and (key_padding_mask.shape != (B, S_k)
                                         or key_padding_mask.dtype != torch.bool):
        raise ValueError(f"key_padding_mask must be bool (B, S_k) = ({B}, {S_k}); got "
                         f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
    if segment_ids is not None and segment_ids.shape != (B, S_k):
        raise ValueError(f"segment_ids must be (B, S_k) = ({B}, {S_k}); "
                         f"got {tuple(segment_ids.shape)}")
    if q_offset < 0 or (segment_ids is not None and q_offset + q.shape[2] > S_k):
        raise ValueError(f"q_offset must be >= 0 (and q_offset + S_q <= S_k with segment_ids); "
                         f"got q_offset={q_offset}, S_q={q.shape[2]}, S_k={S_k}")


def inner_attention(q, k, v, mask, is_causal: bool, ops: str, guarded: bool = False):
    """q ``(N, M, Lq, D)``, k, v ``(N, M, Lk, D)`` -> ``(N, M, Lq, D)`` (``M`` heads or groups).

    ``mask``: None, bool (True = may attend) or an additive float bias (0 / -inf), broadcastable
    to ``(N, M, Lq, Lk)``; ``is_causal``: key ``c`` allowed iff ``c <= row`` (only without
    ``mask``). Rows with no allowed key get a dummy key (column 0) so the softmax stays finite (no
    NaN in values or gradients) and their output is zeroed; ``guarded=True`` says the caller
    already did that (a plan's precomputed bias: its empty rows are padding, dropped later).
    """
    empty = None
    if mask is not None and not guarded:
        empty = ~mask.any(-1, keepdim=True)  # (.., Lq, 1)
        first = torch.arange(mask.shape[-1], device=mask.device) == 0
        mask = mask | (empty & first)
    if ops == "fused":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    else:
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (N, M, Lq, Lk)
        if is_causal:
            mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
        if mask is not None and mask.dtype == torch.bool:
            scores.masked_fill_(~mask, float("-inf"))  # in place: matmul's backward needs q, k only
        elif mask is not None:
            scores += mask
        out = scores.softmax(-1) @ v
    return out if empty is None else out.masked_fill(empty, 0.0)


def masked_attention(strategy, q, k, v, causal, key_padding_mask, segment_ids, q_offset, ops):
    """Attention with one ``(S_q, S_k)`` mask: O(S_q * S_k). For dense, the mask is left out
    (or becomes ``is_causal``) whenever that is exact, so SDPA can pick its fastest kernel."""
    S_q, S_k = q.shape[-2], k.shape[-2]
    mask, is_causal = None, False
    if not strategy.everything_allowed or (causal and 0 < q_offset < S_k - 1):
        mask = strategy.dense_mask(S_q, S_k, causal, q_offset, device=q.device)  # (S_q, S_k)
    elif causal and q_offset == 0:
        is_causal = True  # SDPA's top-left causal rule: key c allowed iff c <= row
    # (dense, causal, q_offset >= S_k - 1: every key is in the past, nothing to mask)
    extra = _batch_mask(key_padding_mask, segment_ids, q_offset, S_q)  # (B, 1, S_q | 1, S_k)
    if extra is not None:
        if is_causal:
            mask, is_causal = strategy.dense_mask(S_q, S_k, True, 0, device=q.device), False
        mask = extra if mask is None else mask & extra
    return inner_attention(q, k, v, mask, is_causal, ops)


def _batch_mask(key_padding_mask, segment_ids, q_offset, S_q):
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, S_k)
    if segment_ids is not None:
        seg_q = segment_ids[:, q_offset:q_offset + S_q]  # (B, S_q)
        same = seg_q[:, None, :, None] == segment_ids[:, None, None, :]  # (B, 1, S_q, S_k)
        mask = same if mask is None else mask & same
    return mask


@dataclass(frozen=True)
class Rows:
    """Which rows of ``(B, H, S, D)`` make the ``(G, L)`` groups: ``idx[g, t] = offset + g * step
    + t * stride`` (``strided``: taken as a view of the sequence zero-padded by ``pad``), or an
    arbitrary ``index`` (``(G * L,)`` int64 in ``[0, S)``, gathered with a copy)."""

    G: int
    L: int
    strided: tuple[int, int, int] | None  # offset, step, stride
    pad: tuple[int, int]  # zero rows added before / after the sequence (strided only)
    index: torch.Tensor | None


def _rows(idx: torch.Tensor, S: int, device) -> Rows:
    G, L = idx.shape
    offset = int(idx[0, 0])
    step = int(idx[1, 0] - idx[0, 0]) if G > 1 else 1
    stride = int(idx[0, 1] - idx[0, 0]) if L > 1 else 1
    expected = offset + step * torch.arange(G)[:, None] + stride * torch.arange(L)
    if step >= 1 and stride >= 1 and torch.equal(idx, expected):
        pad = (max(0, -int(idx.min())), max(0, int(idx.max()) - (S - 1)))
        return Rows(G, L, (offset, step, stride), pad, None)
    return Rows(G, L, None, (0, 0), idx.clamp(0, S - 1).flatten().to(device))


def take(x: torch.Tensor, rows: Rows) -> torch.Tensor:
    """x ``(B, H, S, D)`` -> ``(B * H, G, L, D)``: a strided view (after a zero pad if needed) of
    windows / blocks / interleaved rows, else a gather."""
    B, H, S, D = x.shape
    if rows.index is not None:
        return x.index_select(2, rows.index).reshape(B * H, rows.G, rows.L, D)
    offset, step, stride = rows.strided
    if rows.pad != (0, 0):  # cat writes each row once (F.pad fills everything, then copies)
        before, after = (x.new_zeros(B, H, n, D) for n in rows.pad)
        x = torch.cat([before, x, after], dim=2)  # (B, H, S + pads, D)
    span = (rows.L - 1) * stride + 1  # positions covered by one group
    x = x.reshape(B * H, -1, D).narrow(1, offset + rows.pad[0], (rows.G - 1) * step + span)
    windows = x.unfold(1, span, step)[..., ::stride]  # (B*H, G, D, L)
    return windows.transpose(-2, -1)  # (B*H, G, L, D)


@dataclass(frozen=True)
class Plan:
    """How a sparse self-attention of length ``S`` runs: gather, attend per group, scatter back.

    Groups go where SDPA expects heads: ``(B, H, S, D)`` -> ``(B * H, G, L, D)``, so a
    ``(G, Lq, Lk)`` pattern broadcasts over batch and heads without a copy.
    """

    q_rows: Rows  # (G, Lq) query rows
    k_rows: Rows  # (G, Lk) candidate key rows
    q_pos: torch.Tensor  # (G, Lq) int64 positions clamped into [0, S) (padding, segments)
    k_pos: torch.Tensor  # (G, Lk) int64
    pattern: torch.Tensor | None  # (G, Lq, Lk) bool, True = allowed; None: trivial
    bias: torch.Tensor | None  # (1, G, Lq, Lk) pattern as an additive 0 / -inf bias, guarded
    is_causal: bool  # the pattern is the lower triangle of every group
    slot: torch.Tensor | None  # (S,) int64: row of query s among the G * Lq group rows; None: s


@functools.lru_cache(maxsize=64)
def plan_for(strategy, S: int, causal: bool, device, dtype) -> Plan | None:
    """The cached :class:`Plan` of ``strategy`` for ``(S, causal, device, dtype)``; None: dense."""
    found = strategy.groups(S, causal)
    if found is None:
        return None
    q_idx, k_idx = found  # (G, Lq), (G, Lk); outside [0, S) = padding
    (G, Lq), Lk = q_idx.shape, k_idx.shape[1]
    qi, kj = q_idx[:, :, None], k_idx[:, None, :]  # (G, Lq, 1), (G, 1, Lk)
    pattern = (qi >= 0) & (qi < S) & (kj >= 0) & (kj < S) & strategy.allowed(qi, kj)
    if causal:
        pattern = pattern & (kj <= qi)
    flat, valid = q_idx.flatten(), ((q_idx >= 0) & (q_idx < S)).flatten()
    if not torch.equal(torch.bincount(flat[valid], minlength=S), torch.ones(S, dtype=torch.long)):
        raise RuntimeError(f"{strategy.label}: groups() must cover each query exactly once")
    slot = None
    if not torch.equal(flat[:S], torch.arange(S)):
        slot = torch.empty(S, dtype=torch.long)
        slot[flat[valid]] = torch.arange(G * Lq)[valid]
    is_causal = causal and Lq == Lk and bool((pattern == torch.ones(Lq, Lk).tril().bool()).all())
    trivial = is_causal or bool(pattern.all())
    bias = None
    if not trivial:  # padding rows (no allowed key) get key 0 so softmax stays finite
        guarded = pattern | (~pattern.any(-1, keepdim=True) & (torch.arange(Lk) == 0))
        bias = torch.zeros(1, G, Lq, Lk, dtype=dtype).masked_fill_(~guarded, float("-inf"))
    to = lambda t: None if t is None else t.to(device)
    return Plan(_rows(q_idx, S, device), _rows(k_idx, S, device), to(q_idx.clamp(0, S - 1)),
                to(k_idx.clamp(0, S - 1)), None if trivial else to(pattern), to(bias), is_causal,
                to(slot))


def grouped_attention(plan: Plan, q, k, v, key_padding_mask, segment_ids, ops) -> torch.Tensor:
    """Self-attention of a sparse pattern, group by group. q, k, v ``(B, H, S, D)`` -> same."""
    B, H, S, D = q.shape
    (G, Lq), Lk = plan.q_pos.shape, plan.k_pos.shape[1]
    qg = take(q, plan.q_rows)  # (B*H, G, Lq, D)
    kg, vg = take(k, plan.k_rows), take(v, plan.k_rows)  # (B*H, G, Lk, D)
    extra = None  # (B, G, Lq | 1, Lk) bool from padding and segments
    if key_padding_mask is not None:
        extra = key_padding_mask[:, plan.k_pos][:, :, None, :]  # (B, G, 1, Lk)
    if segment_ids is not None:
        seg_q, seg_k = segment_ids[:, plan.q_pos], segment_ids[:, plan.k_pos]  # (B, G, Lq|Lk)
        same = seg_q[..., :, None] == seg_k[..., None, :]  # (B, G, Lq, Lk)
        extra = same if extra is None else extra & same
    if extra is None:
        out = inner_attention(qg, kg, vg, plan.bias, plan.is_causal, ops, guarded=True)
    else:
        pattern = plan.pattern
        if pattern is None and plan.is_causal:
            pattern = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril()
        mask = extra if pattern is None else extra & pattern  # (B, G, Lq, Lk)
        mask = mask[:, None].expand(B, H, G, Lq, Lk).reshape(B * H, G, Lq, Lk)
        out = inner_attention(qg, kg, vg, mask, False, ops)  # (B*H, G, Lq, D)
    out = out.reshape(B, H, G * Lq, D)
    return out[:, :, :S] if plan.slot is None else out.index_select(2, plan.slot)
