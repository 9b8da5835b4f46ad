"""The ``flash_attn`` kernel: the ``flash-attn`` package's ``flash_attn_func`` and
``flash_attn_varlen_func`` (CUDA only).

An optional extra, never a dependency: without the package (or on CPU, or on a GPU older than
Ampere) the kernel is ``not_supported`` with that reason, before a worker starts. It expresses
what ``window_size`` can: dense (``(-1, -1)``) and a sliding window (``(w, w)``, ``(w, 0)``
when causal); every other pattern raises ``KernelNotSupported`` (a ``not_supported`` point).
Its layout is ``(B, S, H, D)``: q, k and v are transposed in and the output back (two copies the
other kernels do not pay). GQA is native (K/V with fewer heads).

Key padding and packed segments run through ``flash_attn_varlen_func``: the real tokens are
gathered into one ``(N, H, D)`` stream, each (row, segment) a sequence of ``cu_seqlens``, and the
output scattered back. Flash-attn computes no output for a padded position, so **a padded
position's output is zero**: where the pattern gives it no real key (a packed row's tail) that
is what every kernel returns; where it would attend the real keys (a padded query of a plain
padded row), the other kernels return that attention and this one zeros. Nothing reads those
rows: a padded position is masked as a key in every layer, the other sub-layers are
per-position, and its target is ignored (a test checks loss and gradients equal the auto
kernel's). Refused (``KernelNotSupported``), since a sequence of real tokens must be a
contiguous run for the window to keep its distances: local with a padded hole inside a
sequence, and a segment id that recurs apart in a row.
"""
from __future__ import annotations

import importlib.util

import torch

from implementations.attention.grid import KernelNotSupported

PATTERNS = ("dense", "local")  # what window_size can express


def reasons(strategy, device: str, gpu_capability, precision: str = "amp_bf16") -> list[str]:
    """Why the flash_attn kernel cannot run ``strategy`` here (empty: it can)."""
    out = []
    if not precision.startswith(("amp_fp16", "amp_bf16")):
        out.append(f"flash_attn computes in fp16 or bf16 only (precision amp_fp16 or amp_bf16); "
                   f"got {precision}")
    if strategy.name not in PATTERNS:
        out.append(f"flash_attn expresses only dense and local (window_size); {strategy.name} "
                   f"needs a mask it cannot take")
    if device != "cuda":
        out.append("flash_attn runs on CUDA only")
    elif gpu_capability and gpu_capability < (8, 0):
        out.append(f"flash_attn needs compute capability >= 8.0; this GPU has "
                   f"{gpu_capability[0]}.{gpu_capability[1]}")
    if importlib.util.find_spec("flash_attn") is None:
        out.append("flash_attn kernel needs the flash-attn package (pip install flash-attn "
                   "--no-build-isolation, built for this torch and CUDA)")
    return out


def _package(name: str):
    """A function of the flash-attn package; ``KernelNotSupported`` (not ModuleNotFoundError)
    where it is not installed, as on every CPU."""
    try:
        module = importlib.import_module("flash_attn")
    except ImportError:
        raise KernelNotSupported("flash_attn kernel needs the flash-attn package (pip install "
                                 "flash-attn --no-build-isolation, built for this torch and "
                                 "CUDA)") from None
    return getattr(module, name)


def flash_attention(strategy, q, k, v, causal: bool, key_padding_mask, segment_ids):
    """Self-attention (q, k, v ``(B, H, S, D)``) of a dense or local ``strategy``."""
    if strategy.name not in PATTERNS:
        raise KernelNotSupported(f"flash_attn expresses only dense and local (window_size); "
                                 f"{strategy.name} needs a mask it cannot take")
    w = getattr(strategy, "window", -1)
    window = (w, 0 if causal else w)
    if key_padding_mask is not None or segment_ids is not None:
        return varlen_attention(q, k, v, causal, window, key_padding_mask, segment_ids)
    flash_attn_func = _package("flash_attn_func")

    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal,
                          window_size=window)
    return out.transpose(1, 2)  # (B, S, H, D) -> (B, H, S, D)


_LAST: list = []  # [(key_padding_mask, segment_ids, their versions, windowed, sequences)]


def cached_sequences(key_padding_mask, segment_ids, B: int, S: int, device, windowed: bool):
    """:func:`sequences`, computed once for the masks every layer of a step receives: finding
    them syncs the GPU several times (``nonzero``, ``.any()``), which the other kernels do not
    pay per layer. The cache holds the mask tensors themselves, so an identical object with an
    unchanged version is the same mask."""
    versions = tuple(None if t is None else t._version for t in (key_padding_mask, segment_ids))
    if _LAST:
        kpm, seg, seen, was_windowed, got = _LAST[0]
        if kpm is key_padding_mask and seg is segment_ids and seen == versions \
                and was_windowed == windowed:
            return got
    got = sequences(key_padding_mask, segment_ids, B, S, device, windowed)
    _LAST[:] = [(key_padding_mask, segment_ids, versions, windowed, got)]
    return got


def sequences(key_padding_mask, segment_ids, B: int, S: int, device, windowed: bool):
    """The real tokens as varlen sequences: ``(index, cu_seqlens, max_seqlen)``, ``index`` the
    flat positions ``b * S + i`` of the real tokens in order (N,), ``cu_seqlens`` int32 (n + 1,)
    the start of each (row, segment) run among them. Raises ``KernelNotSupported`` where a
    sequence's tokens would not be one contiguous run: a segment id that recurs apart in a row,
    or (``windowed``) a padded hole inside a sequence."""
    seg = segment_ids if segment_ids is not None else torch.zeros(B, S, dtype=torch.long, device=device)
    starts = torch.ones(B, S, dtype=torch.bool, device=device)  # a new (row, segment) run
    starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
    ordered = seg.sort(dim=1).values
    if (starts.sum(1) != 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(1)).any():
        raise KernelNotSupported("flash_attn kernel: a segment id recurs apart in a row, which is "
                                 "not one varlen sequence")
    real = (key_padding_mask if key_padding_mask is not None
            else torch.ones(B, S, dtype=torch.bool, device=device)).flatten()
    index = real.nonzero().squeeze(1)  # (N,)
    run = (starts.flatten().cumsum(0) - 1)[index]  # the run of each real token
    first = torch.ones_like(run, dtype=torch.bool)
    first[1:] = run[1:] != run[:-1]
    if windowed and ((index[1:] - index[:-1] != 1) & ~first[1:]).any():
        raise KernelNotSupported("flash_attn kernel: a padded position inside a local sequence "
                                 "would shift its window's distances (varlen packs real tokens)")
    cu = torch.cat([first.nonzero().squeeze(1), torch.tensor([len(index)], device=device)])
    max_len = int((cu[1:] - cu[:-1]).max()) if len(index) else 0
    return index, cu.to(torch.int32), max_len


def varlen_attention(q, k, v, causal: bool, window, key_padding_mask, segment_ids):
    """q ``(B, H, S, D)``, k, v ``(B, H_kv, S, D)`` -> ``(B, H, S, D)`` through
    ``flash_attn_varlen_func`` over the real tokens; padded positions' outputs are zero."""
    B, H, S, D = q.shape
    index, cu, max_len = cached_sequences(key_padding_mask, segment_ids, B, S, q.device,
                                          windowed=window[0] >= 0)
    out = q.new_zeros(B * S, H, D)
    if len(index):
        flash_attn_varlen_func = _package("flash_attn_varlen_func")

        def tokens(x):  # (B, h, S, D) -> (N, h, D), the real tokens in order
            return x.transpose(1, 2).reshape(B * S, x.shape[1], D).index_select(0, index)

        got = flash_attn_varlen_func(tokens(q), tokens(k), tokens(v), cu, cu, max_len, max_len,
                                     causal=causal, window_size=window)
        out = out.index_copy(0, index, got)
    return out.view(B, S, H, D).transpose(1, 2)
