"""Kernels shared by every attention strategy.

* :func:`inner_attention`: softmax(q k^T / sqrt(D)) v over small or large blocks, eager
  (textbook matmul-softmax-matmul) or fused (``scaled_dot_product_attention``), with the
  empty-row rule: a query with no allowed key returns zeros, with finite gradients.
* :func:`masked_attention`: one ``(S_q, S_k)`` mask (dense, decoding, cross-attention).
* :func:`grouped_attention`: a sparse self-attention run group by group from a :class:`Plan`
  (see ``AttentionStrategy.groups``), so no ``S x S`` score matrix is ever built. Groups are
  taken (:func:`take`) as reshapes, strided views (eager) or ``index_select`` gathers (under
  ``torch.compile``), all decided from Python ints only, so it traces with no graph break.

Profiler ranges (``implementations.regions``, inside the layer's ``attention`` range; off unless
profiling): ``mask`` (building and applying masks), ``scores``, ``softmax``, ``value`` (eager) or
``sdpa`` (the fused kernel), and ``gather`` (a sparse pattern's groups taken and put back).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from implementations.attention.grid import Grid, Rows
from implementations.regions import region

OPS = ("eager", "fused")  # the two ways to compute attention: textbook tensor ops, or SDPA


def check_inputs(q, k, v, key_padding_mask, segment_ids, q_offset, ops) -> None:
    if ops not in OPS:
        raise ValueError(f"attention ops must be one of {', '.join(OPS)}; got {ops!r}")
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape or q.shape[0] != k.shape[0] \
            or q.shape[1] % k.shape[1] or q.shape[-1] != k.shape[-1]:
        raise ValueError("attention expects q (B, H, S_q, D), k and v (B, H_kv, S_k, D) with "
                         f"H_kv dividing H; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
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


def repeat_kv(t: torch.Tensor, heads: int) -> torch.Tensor:
    """K or V ``(B, H_kv, S, D)`` -> ``(B, heads, S, D)``: query head h reads K/V head
    ``h // (heads / H_kv)`` (GQA; ``t`` itself when ``H_kv == heads``)."""
    B, H_kv, S, D = t.shape
    if H_kv == heads:
        return t
    return t[:, :, None].expand(B, H_kv, heads // H_kv, S, D).reshape(B, heads, S, D)


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
        with region("attention", "mask"):
            empty = ~mask.any(-1, keepdim=True)  # (.., Lq, 1)
            first = torch.arange(mask.shape[-1], device=mask.device) == 0
            mask = mask | (empty & first)
    if ops == "fused":  # GQA (fewer K/V heads): SDPA reads each K/V head for its group
        with region("attention", "sdpa"):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                                 enable_gqa=k.shape[1] != q.shape[1])
    else:
        k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])
        with region("attention", "scores"):
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (N, M, Lq, Lk)
        with region("attention", "mask"):
            if is_causal:
                mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
            if mask is not None and mask.dtype == torch.bool:
                scores.masked_fill_(~mask, float("-inf"))  # in place: matmul's backward needs q, k only
            elif mask is not None:
                scores += mask
        with region("attention", "softmax"):
            probs = scores.softmax(-1)
        with region("attention", "value"):
            out = probs @ v
        del probs  # freed here, as the unnamed temporary of ``scores.softmax(-1) @ v`` was
    return out if empty is None else out.masked_fill(empty, 0.0)


def masked_attention(strategy, q, k, v, causal, key_padding_mask, segment_ids, q_offset, ops):
    """Attention with one ``(S_q, S_k)`` mask: O(S_q * S_k). For dense, the mask is left out
    (or becomes ``is_causal``) whenever that is exact, so SDPA can pick its fastest kernel."""
    with region("attention", "mask"):
        mask, is_causal = _full_mask(strategy, q, k, causal, key_padding_mask, segment_ids,
                                     q_offset)
    return inner_attention(q, k, v, mask, is_causal, ops)


def _full_mask(strategy, q, k, causal, key_padding_mask, segment_ids, q_offset):
    """The ``(mask, is_causal)`` of :func:`masked_attention`."""
    S_q, S_k = q.shape[-2], k.shape[-2]
    mask, is_causal = None, False
    if not strategy.everything_allowed or (causal and 0 < q_offset < S_k - 1):
        mask = strategy.dense_mask(S_q, S_k, causal, q_offset, device=q.device)  # (S_q, S_k)
    elif causal and q_offset == 0:
        is_causal = True  # SDPA's top-left causal rule: key c allowed iff c <= row
    # (dense, causal, q_offset >= S_k - 1: every key is in the past, nothing to mask)
    seg_q = None if segment_ids is None else segment_ids[:, q_offset:q_offset + S_q]
    extra = _batch_mask(key_padding_mask, segment_ids, seg_q)  # (B, 1, S_q | 1, S_k)
    if extra is not None:
        if is_causal:
            mask, is_causal = strategy.dense_mask(S_q, S_k, True, 0, device=q.device), False
        mask = extra if mask is None else mask & extra
    return mask, is_causal


def _batch_mask(key_padding_mask, segment_ids, seg_q):
    """``(B, 1, S_q | 1, S_k)`` bool of padding and segments (``seg_q``: the queries' segment
    ids, ``(B, S_q)``); None without both."""
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, S_k)
    if segment_ids is not None:
        same = seg_q[:, None, :, None] == segment_ids[:, None, None, :]  # (B, 1, S_q, S_k)
        mask = same if mask is None else mask & same
    return mask


def take(x: torch.Tensor, grid: Grid | Rows, gather: bool | None = None) -> torch.Tensor:
    """x ``(B, H, S, D)`` -> ``(B * H, G, L, D)``: the rows of ``grid`` (zero-padded first when
    the grid reaches outside ``[0, S)``). Explicit :class:`Rows` are always a gather.

    A grid that tiles the sequence contiguously (block, local queries) is a plain reshape. Any
    other grid (overlapping key windows, dilated rows) is either a strided view of the sequence
    (windows overlapping without a copy; ``gather=False``) or an explicit gather
    (``index_select`` with the grid's positions; ``gather=True``). ``None``: gather exactly when
    tracing under ``torch.compile``. The gather costs one ``(B, H, G * L, D)`` copy, but its
    backward is a plain ``index_add`` along the sequence; the strided view's backward
    (``unfold_backward`` of a view whose positions are the innermost axis) is miscompiled by
    inductor's CPU backend (torch 2.13: its 2-D tiled scatter-add writes out of bounds: wrong
    gradients, heap corruption or a segfault in the compiled backward), so compiled code never
    uses it. Eager keeps the view (eager autograd is exact): gathering there made fused local
    ``w=128`` at ``S=4096`` 2.5x slower on CPU (SDPA reads the overlapping view without a copy)."""
    B, H, S, D = x.shape
    if isinstance(grid, Rows):  # one zero row in front: padding positions read it
        index = grid.positions(x.device)
        index = torch.where((index >= 0) & (index < S), index + 1, 0).reshape(-1)
        x = torch.cat([x.new_zeros(B, H, 1, D), x], dim=2)
        return x.index_select(2, index).reshape(B * H, grid.count, grid.length, D)
    before, after = max(0, -grid.offset), max(0, grid.last - (S - 1))
    base = 0  # the position of x's row 0
    if before or after:  # only the grid's span, padded; cat writes each row once
        lo, hi = max(0, grid.offset), min(S - 1, grid.last)
        x = torch.cat([x.new_zeros(B, H, before, D), x.narrow(2, lo, max(0, hi - lo + 1)),
                       x.new_zeros(B, H, after, D)], dim=2)
        base = grid.offset
    start, span = grid.offset - base, grid.last - grid.offset + 1
    if grid.strides == _row_major(grid.shape):  # rows start..start+span-1 in order: a reshape
        return x.narrow(2, start, span).reshape(B * H, grid.count, grid.length, D)
    if gather is None:
        gather = torch.compiler.is_compiling()
    if gather:  # positions from arange and Python ints: no graph break, no data dependence
        index = grid.positions(x.device).reshape(-1) - base
        return x.index_select(2, index).reshape(B * H, grid.count, grid.length, D)
    if tiled(grid) and x.requires_grad:  # the same view, with a backward of m adds
        return TiledWindows.apply(x, grid, start)
    return _window_view(x, grid, start, span)


def _window_view(x: torch.Tensor, grid: Grid, start: int, span: int) -> torch.Tensor:
    """The rows of ``grid`` as a (strided, possibly overlapping) view of x ``(B, H, S', D)``."""
    B, H, _, D = x.shape
    rows = x.reshape(B * H, -1, D).transpose(1, 2)  # (B*H, D, S + pads): positions last
    rows = rows.narrow(2, start, span)
    for n, s in zip(grid.shape[:-1], grid.strides[:-1]):  # one unfold per group axis
        rows = rows.unfold(-1, rows.shape[-1] - (n - 1) * s, s)  # (..., n, rest of the span)
    rows = rows[..., ::grid.strides[-1]]  # (B*H, D, n_1, .., L)
    return rows.movedim(1, -1).reshape(B * H, grid.count, grid.length, D)


def tiled(grid: Grid) -> bool:
    """Whether each group's rows are ``m`` whole consecutive tiles of the group stride: windows
    ``(G, m s)`` with strides ``(s, 1)`` (local's chunks when the window is a multiple of the
    chunk)."""
    return (len(grid.shape) == 2 and grid.strides[1] == 1 and grid.strides[0] < grid.length
            and grid.length % grid.strides[0] == 0)


class TiledWindows(torch.autograd.Function):
    """Overlapping windows of whole tiles: forward the strided view of :func:`take` (no copy),
    backward one zero buffer and ``m`` shifted adds (group ``g``'s tile ``t`` is tile ``g + t``
    of the sequence). Autograd's own backward of that view (``unfold_backward``) made fused
    local attention's training step on CPU about 1.6x slower (``benchmarks/bench_attention.py
    --backward``)."""

    @staticmethod
    def forward(ctx, x, grid: Grid, start: int):
        G, L = grid.shape
        ctx.grid, ctx.start, ctx.shape = grid, start, x.shape
        return _window_view(x, grid, start, (G - 1) * grid.strides[0] + L)

    @staticmethod
    def backward(ctx, grad):
        (G, L), s = ctx.grid.shape, ctx.grid.strides[0]
        B, H, S, D = ctx.shape
        dx = grad.new_zeros(B * H, S, D)
        tiles = grad.reshape(B * H, G, L // s, s, D)
        for t in range(L // s):  # tile t of every group: rows start + (g + t) s ..
            dx.narrow(1, ctx.start + t * s, G * s).add_(tiles[:, :, t].reshape(B * H, G * s, D))
        return dx.view(B, H, S, D), None, None


def _row_major(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides of a contiguous array of ``shape`` (in positions)."""
    strides, size = [], 1
    for n in reversed(shape):
        strides.insert(0, size)
        size *= n
    return tuple(strides)


def tiling_order(grid: Grid, S: int) -> tuple[int, ...]:
    """The axes of ``grid`` from slowest to fastest when its positions are a row-major
    ``0..N-1`` (``N >= S``) with the axes permuted: then each query is in exactly one group,
    and permuting the axes back and dropping positions ``>= S`` undoes the grouping."""
    left, order, size = list(range(len(grid.shape))), [], 1  # size: positions of faster axes
    while left:  # the next faster axis steps over all the faster ones (no sort: SymInt-safe)
        for a in left:
            if grid.shape[a] == 1 or grid.strides[a] == size:
                break
        else:
            raise ValueError(f"groups(): the query grid must tile 0..N-1; got {grid}")
        left.remove(a)
        order.insert(0, a)
        size *= grid.shape[a]
    if grid.offset != 0 or size < S:
        raise ValueError(f"groups(): the query grid must start at 0 and cover S = {S}; got {grid}")
    return tuple(order)


def untake(out: torch.Tensor, grid: Grid, order: tuple[int, ...], B: int, S: int):
    """Inverse of :func:`take` for a tiling query grid: ``(B * H, G, L, D)`` -> ``(B, H, S, D)``."""
    BH, _, _, D = out.shape
    out = out.reshape(B, BH // B, *grid.shape, D)  # (B, H, n_1, .., L, D)
    out = out.permute(0, 1, *(2 + a for a in order), -1)  # axes in position order
    return out.reshape(B, BH // B, -1, D)[:, :, :S]  # (B, H, N, D) -> (B, H, S, D)


@dataclass(frozen=True)
class Plan:
    """How a sparse self-attention of length ``S`` runs: take groups, attend per group, put back.

    Groups go where SDPA expects heads: ``(B, H, S, D)`` -> ``(B * H, G, L, D)``, so a
    ``(G, Lq, Lk)`` pattern broadcasts over batch and heads without a copy. Every decision here
    is made from Python ints (the grids), never from tensor values (see :func:`plan_for`).
    """

    q: Grid  # (.., Lq) query rows
    k: Grid | Rows  # (.., Lk) candidate key rows
    order: tuple[int, ...]  # axes of q from slowest to fastest position (see tiling_order)
    pattern: torch.Tensor | None  # (G, Lq, Lk) bool, True = allowed; None: trivial
    bias: torch.Tensor | None  # (1, G, Lq, Lk) pattern as an additive 0 / -inf bias, guarded
    is_causal: bool  # the pattern is the lower triangle of every group
    rows: torch.Tensor | None = None  # (R,) queries computed as whole rows (global tokens)
    row_pattern: torch.Tensor | None = None  # (R, S) bool: their allowed keys
    interior: tuple[int, int] | None = None  # groups lo..hi-1: windows inside [0, S), one pattern
    shared_bias: torch.Tensor | None = None  # (1, 1, Lq, Lk) that pattern's bias


def interior_groups(q: Grid, k: Grid, S: int, pattern: torch.Tensor) -> tuple[int, int] | None:
    """The run of groups ``lo..hi-1`` that :func:`interior_attention` can take: 2-D query and
    tiled key grids with the same group stride, each group's rows inside ``[0, S)``, and the
    same pattern in every one of them (a pattern of ``i - j`` only, like local's). None: none."""
    if not (isinstance(k, Grid) and tiled(k) and len(q.shape) == 2 and q.strides == (q.length, 1)
            and k.strides[0] == q.strides[0]):
        return None
    step = q.strides[0]
    lo = max(0, -(k.offset // step))  # the first window starting at 0 or later
    last = min((S - k.length - k.offset) // step, (S - q.length - q.offset) // step)
    hi = min(last + 1, q.count)  # windows and query rows ending <= S - 1
    if hi <= lo or not bool((pattern[lo:hi] == pattern[lo]).all()):
        return None
    return lo, hi


def plan_for(strategy, S: int, causal: bool, device, dtype) -> Plan | None:
    """The :class:`Plan` of ``strategy`` for ``(S, causal, device, dtype)``; None: dense.

    Cached when eager. Under ``torch.compile`` it is traced into the graph instead (Dynamo would
    skip the cache anyway): only Python ints decide anything, so nothing breaks the graph, and
    the few tensors it builds (from ``arange``, O(S * keys)) are computed inside it."""
    if torch.compiler.is_compiling():
        return make_plan(strategy, S, causal, device, dtype)
    return cached_plan(strategy, S, causal, device, dtype)


def make_plan(strategy, S: int, causal: bool, device, dtype) -> Plan | None:
    """Build the plan (uncached): views from the grids, a pattern only where one is needed."""
    found = strategy.groups(S, causal)
    if found is None:
        return None
    q, k = found.q, found.k
    if isinstance(k, Rows):  # the candidate positions live where the plan runs
        k = Rows(k.index.to(device), k.shape)
    order = tiling_order(q, S)
    padded = isinstance(k, Rows) or min(q.offset, k.offset) < 0 or max(q.last, k.last) >= S
    is_causal = causal and found.full and not padded and q == k  # same rows: causal = tril
    rows = row_pattern = None
    if found.rows:  # global queries: whole rows, under the pattern and the causal rule
        rows = torch.tensor(found.rows, dtype=torch.long, device=device)
        j = torch.arange(S, device=device)
        row_pattern = strategy.allowed(rows[:, None], j) & ((j <= rows[:, None]) | (not causal))
    if found.full and not padded and (is_causal or not causal):
        return Plan(q, k, order, None, None, is_causal, rows, row_pattern)
    G, Lq, Lk = q.count, q.length, k.length
    qi, kj = q.positions(device)[:, :, None], k.positions(device)[:, None, :]  # (G,Lq,1) (G,1,Lk)
    pattern = (qi >= 0) & (qi < S) & (kj >= 0) & (kj < S) & strategy.allowed(qi, kj)
    if causal:
        pattern = pattern & (kj <= qi)  # (G, Lq, Lk)
    # padding rows (no allowed key) get key 0 so softmax stays finite; their output is dropped
    first = torch.arange(Lk, device=device) == 0
    guarded = pattern | (~pattern.any(-1, keepdim=True) & first)
    bias = torch.zeros(1, G, Lq, Lk, dtype=dtype, device=device).masked_fill(~guarded, -math.inf)
    interior = None if torch.compiler.is_compiling() else interior_groups(q, k, S, pattern)
    shared = None if interior is None else bias[:, interior[0]:interior[0] + 1].clone()
    return Plan(q, k, order, pattern, bias, False, rows, row_pattern, interior, shared)


cached_plan = functools.lru_cache(maxsize=64)(make_plan)


def grouped_attention(plan: Plan, q, k, v, key_padding_mask, segment_ids, ops) -> torch.Tensor:
    """Self-attention of a sparse pattern, group by group. q, k, v ``(B, H, S, D)`` -> same
    (GQA: K and V repeated to H heads first, since groups take the place of heads)."""
    B, H, S, D = q.shape
    k, v = repeat_kv(k, H), repeat_kv(v, H)
    if plan.interior is not None and key_padding_mask is None and segment_ids is None:
        out = interior_attention(plan, q, k, v, ops)
    else:
        with region("attention", "gather"):
            qg = take(q, plan.q)  # (B*H, G, Lq, D)
            kg, vg = take(k, plan.k), take(v, plan.k)  # (B*H, G, Lk, D)
        with region("attention", "mask"):
            mask = _group_mask(plan, key_padding_mask, segment_ids, B, H, q.device)
        if mask is None:
            out = inner_attention(qg, kg, vg, plan.bias, plan.is_causal, ops, guarded=True)
        else:
            out = inner_attention(qg, kg, vg, mask, False, ops)  # (B*H, G, Lq, D)
    with region("attention", "gather"):
        out = untake(out, plan.q, plan.order, B, S)
    if plan.rows is None:
        return out
    with region("attention", "gather"):
        q_rows = q.index_select(2, plan.rows)  # (B, H, R, D)
    with region("attention", "mask"):
        seg_q = None if segment_ids is None else segment_ids.index_select(1, plan.rows)
        extra = _batch_mask(key_padding_mask, segment_ids, seg_q)  # (B, 1, R | 1, S)
        mask = plan.row_pattern if extra is None else plan.row_pattern & extra
    rows_out = inner_attention(q_rows, k, v, mask, False, ops)  # O(R * S)
    with region("attention", "gather"):
        return out.index_copy(2, plan.rows, rows_out)


INTERIOR_SLICES = 4  # inference: interior groups in this many calls, the peak holds 1/4 of them


def interior_attention(plan: Plan, q, k, v, ops) -> torch.Tensor:
    """:func:`grouped_attention` of a plan with an interior, without padding or segments:
    ``(B, H, S, D)`` -> ``(B * H, G, Lq, D)``, the groups' outputs in place.

    The interior groups read their keys as views of k and v themselves (no zero-padded copy)
    and share one ``(Lq, Lk)`` bias; only the few edge groups are taken with padding and their
    own bias. Without autograd the groups are attended a slice at a time into one output, so a
    forward holds the output plus a quarter of it, not two copies (or the padded K and V).
    (K and V are copied once when their batch and head axes cannot merge into one.)"""
    B, H, S, D = q.shape
    lo, hi = plan.interior
    G, Lq, Lk = plan.q.count, plan.q.length, plan.k.length
    step = plan.q.strides[0]
    if k.stride(0) != k.shape[1] * k.stride(1):  # (B, H) do not merge into one axis (B > 1
        k, v = k.contiguous(), v.contiguous()    # heads of a (B, S, H, D) projection): copy once
    out = q.new_empty(B * H, G, Lq, D)
    for g in (g for g in range(G) if not lo <= g < hi):  # each edge group alone: its own
        qg = take(q, Grid((1, Lq), plan.q.strides, plan.q.offset + g * step))  # padded rows, bias
        kg_grid = Grid((1, Lk), plan.k.strides, plan.k.offset + g * step)
        out[:, g:g + 1] = inner_attention(qg, take(k, kg_grid), take(v, kg_grid),
                                          plan.bias[:, g:g + 1], False, ops, guarded=True)
    slices = INTERIOR_SLICES if not torch.is_grad_enabled() else 1  # training saves every
    size = -(-(hi - lo) // slices)  # slice's inputs anyway; one call, one full-size grad buffer
    for start in range(lo, hi, size):
        n = min(size, hi - start)
        with region("attention", "gather"):
            qg = take(q, Grid((n, Lq), plan.q.strides, plan.q.offset + start * step))
            k_grid = Grid((n, Lk), plan.k.strides, plan.k.offset + start * step)
            kg, vg = take(k, k_grid), take(v, k_grid)  # views: the windows lie inside [0, S)
        out[:, start:start + n] = inner_attention(qg, kg, vg, plan.shared_bias, False, ops,
                                                  guarded=True)
    return out


def _group_mask(plan: Plan, key_padding_mask, segment_ids, B: int, H: int, device):
    """``(B * H, G, Lq, Lk)`` bool of a plan with padding and segments; None without both."""
    G, Lq, Lk = plan.q.count, plan.q.length, plan.k.length
    extra = None  # (B, G, Lq | 1, Lk) bool from padding and segments
    if key_padding_mask is not None:  # padding positions read as False
        extra = take(key_padding_mask[:, None, :, None], plan.k).transpose(-2, -1)  # (B,G,1,Lk)
    if segment_ids is not None:
        seg = segment_ids[:, None, :, None]  # (B, 1, S, 1)
        same = take(seg, plan.q) == take(seg, plan.k).transpose(-2, -1)  # (B, G, Lq, Lk)
        extra = same if extra is None else extra & same
    if extra is None:
        return None
    pattern = plan.pattern
    if pattern is None and plan.is_causal:
        pattern = torch.ones(Lq, Lk, dtype=torch.bool, device=device).tril()
    mask = extra if pattern is None else extra & pattern  # (B, G, Lq, Lk)
    return mask[:, None].expand(B, H, G, Lq, Lk).reshape(B * H, G, Lq, Lk)
