"""The ``flex`` kernel: FlexAttention with a block mask built from the pattern's own rule.

A pattern's ``allowed(i, j)`` is plain tensor arithmetic on positions, which is exactly what a
FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` is; the causal rule, key padding and segment ids
are added as further terms. ``create_block_mask`` (compiled, so the S x S mask is never
materialised) evaluates the rule once per shape and records which (128 x 128) blocks of the
score matrix hold any allowed pair; the compiled kernel visits only
those, so the work is O(allowed blocks). The block mask of a pattern without padding or segments
depends only on the shape and is cached; one with them depends on the batch and is built per call.
:data:`STATS` counts the block masks built; :func:`retime_last_block_mask` gives the steady cost
of one (the worker reports both).

FlexAttention is compiled (``torch.compile``; the first call of a new pattern or shape compiles,
which the worker measures as ``compile_s``). On CPU, torch 2.13 runs it in float32, float16 and
bfloat16, forward only (its backward raises ``NotImplementedError``), so a CPU train point is
``not_supported``. A query with no allowed key returns zeros.
"""
from __future__ import annotations

import dataclasses
import functools
import time

import torch

from implementations.attention.grid import KernelNotSupported

STATS = {"block_masks": 0}  # block masks built so far in this process
CPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
COMPILE_MASKS = True  # build block masks compiled: never the S x S mask (4 GiB at S=16K in
#                       eager), 0.2 s instead of 4.7 s at S=16K on CPU
RECOMPILE_LIMIT = 64  # one compiled graph per (pattern, mask terms, shape); dynamo's default is 8


@functools.lru_cache(maxsize=1)
def compiled_flex():
    """``torch.compile(flex_attention)``, built once per process."""
    from torch.nn.attention.flex_attention import flex_attention

    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, RECOMPILE_LIMIT)
    return torch.compile(flex_attention)


def mask_mod_for(strategy, causal: bool, key_padding_mask, segment_ids):
    """The FlexAttention ``mask_mod`` of ``strategy`` with these terms; None: nothing masked."""
    rule = None if strategy.everything_allowed else strategy.allowed
    if rule is None and not causal and key_padding_mask is None and segment_ids is None:
        return None

    def mask_mod(b, h, q_idx, kv_idx):
        q_idx, kv_idx = q_idx.to(torch.int64), kv_idx.to(torch.int64)  # rules (bigbird's hash)
        ok = kv_idx >= 0  # are int64 arithmetic; a bool of the right (batched) shape, True
        if rule is not None:
            ok = ok & rule(q_idx, kv_idx)
        if causal:
            ok = ok & (kv_idx <= q_idx)
        if key_padding_mask is not None:
            ok = ok & key_padding_mask[b, kv_idx]
        if segment_ids is not None:
            ok = ok & (segment_ids[b, q_idx] == segment_ids[b, kv_idx])
        return ok

    return mask_mod


_last_build = []  # the arguments of the last block mask built (for retime_last_block_mask)


def build_block_mask(mask_mod, B, S: int, device):
    from torch.nn.attention.flex_attention import create_block_mask

    block_mask = create_block_mask(mask_mod, B, None, S, S, device=device, _compile=COMPILE_MASKS)
    STATS["block_masks"] += 1
    _last_build[:] = [mask_mod, B, S, device]
    return block_mask


def retime_last_block_mask() -> float | None:
    """Seconds to build the last block mask again: its steady cost (the first build of a
    process also pays one-time set-up, over a second on CPU). None if none was built."""
    if not _last_build:
        return None
    from torch.nn.attention.flex_attention import create_block_mask

    mask_mod, B, S, device = _last_build
    t0 = time.perf_counter()
    create_block_mask(mask_mod, B, None, S, S, device=device, _compile=COMPILE_MASKS)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


@functools.lru_cache(maxsize=32)
def cached_block_mask(strategy, S: int, causal: bool, device):
    """The block mask of a pattern alone (no batch terms): one per (pattern, S, causal, device)."""
    mask_mod = mask_mod_for(strategy, causal, None, None)
    return None if mask_mod is None else build_block_mask(mask_mod, None, S, device)


_last_rule = {}  # device type -> the pattern (kernel aside) compiled last in this process


def one_pattern_per_compile(strategy, device) -> None:
    """Reset dynamo's caches when a CPU process moves to a new pattern.

    Inductor's CPU FlexAttention template miscompiles some patterns compiled after another one
    in the same process (torch 2.13: block after bigbird fails to build, "'cur_kvSplitSize6'
    was not declared in this scope"); each pattern compiled in a fresh state builds. A worker
    measures one pattern, so this only acts in tests and benchmarks that run several."""
    rule = dataclasses.replace(strategy, kernel="auto")
    if device.type == "cpu" and _last_rule.get("cpu", rule) != rule:
        torch._dynamo.reset()
    _last_rule[device.type] = rule


def flex_attention(strategy, q, k, v, causal: bool, key_padding_mask, segment_ids):
    """Self-attention (q, k, v ``(B, H, S, D)``) of ``strategy`` through FlexAttention."""
    if q.device.type == "cpu" and q.dtype not in CPU_DTYPES:
        raise KernelNotSupported(f"FlexAttention on CPU runs float32, float16 and bfloat16; got "
                                  f"{q.dtype}")
    one_pattern_per_compile(strategy, q.device)
    B, S = q.shape[0], q.shape[2]
    if key_padding_mask is None and segment_ids is None:
        block_mask = cached_block_mask(strategy, S, bool(causal), q.device)
    else:
        block_mask = build_block_mask(
            mask_mod_for(strategy, causal, key_padding_mask, segment_ids), B, S, q.device)
    return compiled_flex()(q, k, v, block_mask=block_mask, enable_gqa=k.shape[1] != q.shape[1])
