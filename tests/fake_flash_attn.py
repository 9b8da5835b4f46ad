"""A stand-in for the ``flash-attn`` package on a machine without a GPU (the boundary that cannot
exist here): ``flash_attn_func`` and ``flash_attn_varlen_func`` computed by plain tensor ops
from flash-attn's documented semantics, so tbench's own side of the call (layouts, unpadding,
``cu_seqlens``, scattering back) is tested on CPU. The real package runs in the GPU check.

Semantics (flash-attn 2.x docstrings): scores scaled by ``D ** -0.5``; query i of a sequence of
``L_q`` queries over ``L_k`` keys may see key j iff ``j <= i + L_k - L_q`` when causal (the
bottom-right corner) and ``i + L_k - L_q - left <= j <= i + L_k - L_q + right`` for
``window_size=(left, right)`` (-1: no limit); K/V heads may be fewer than query heads (GQA:
query head h reads K/V head ``h // (H / H_kv)``). A query with no visible key outputs zeros.
"""
from __future__ import annotations

import types

import torch


def _attend(q, k, v, causal: bool, window) -> torch.Tensor:
    """One sequence: q ``(L_q, H, D)``, k, v ``(L_k, H_kv, D)`` -> ``(L_q, H, D)``."""
    L_q, H, D = q.shape
    L_k, H_kv = k.shape[:2]
    k, v = (t.repeat_interleave(H // H_kv, dim=1) for t in (k, v))
    scores = torch.einsum("qhd,khd->hqk", q, k) * D ** -0.5
    shift = torch.arange(L_q)[:, None] + L_k - L_q  # i + L_k - L_q
    j = torch.arange(L_k)[None, :]
    allowed = torch.ones(L_q, L_k, dtype=torch.bool)
    left, right = window
    if causal:
        allowed &= j <= shift
    if left >= 0:
        allowed &= j >= shift - left
    if right >= 0:
        allowed &= j <= shift + right
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # a row with no key: zeros
    return torch.einsum("hqk,khd->qhd", probs, v)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=(-1, -1)):
    """q ``(B, S_q, H, D)``, k, v ``(B, S_k, H_kv, D)`` -> ``(B, S_q, H, D)``."""
    return torch.stack([_attend(q[b], k[b], v[b], causal, window_size) for b in range(q.shape[0])])


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1)):
    """q ``(N_q, H, D)``, k, v ``(N_k, H_kv, D)``; sequence n is rows ``cu[n]:cu[n + 1]``."""
    assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32  # what the CUDA kernel takes
    lengths = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).tolist()
    assert max(lengths) == max_seqlen_q and len(lengths) == len(cu_seqlens_k) - 1
    out = []
    for n in range(len(lengths)):
        a, b = int(cu_seqlens_q[n]), int(cu_seqlens_q[n + 1])
        c, d = int(cu_seqlens_k[n]), int(cu_seqlens_k[n + 1])
        out.append(_attend(q[a:b], k[c:d], v[c:d], causal, window_size))
    return torch.cat(out)


def module() -> types.ModuleType:
    """A module object to put in ``sys.modules["flash_attn"]``."""
    fake = types.ModuleType("flash_attn")
    fake.flash_attn_func = flash_attn_func
    fake.flash_attn_varlen_func = flash_attn_varlen_func
    return fake
