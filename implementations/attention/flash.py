"""The ``flash_attn`` kernel: the ``flash-attn`` package's ``flash_attn_func`` (CUDA only).

An optional extra, never a dependency: without the package (or on CPU, or on a GPU older than
Ampere) the kernel is ``not_supported`` with that reason, before a worker starts. It expresses
what ``window_size`` can: dense (``(-1, -1)``) and a sliding window (``(w, w)``, ``(w, 0)``
when causal); every other pattern is ``not_supported``. Key padding and packed segments would
need ``flash_attn_varlen_func`` with the rows unpadded; that is not wired here, so they raise
``KernelNotSupported`` (a ``not_supported`` point), as does a pattern it cannot express. Its
layout is ``(B, S, H, D)``: q, k and v
are transposed in and the output back (two copies the other kernels do not pay).
"""
from __future__ import annotations

import importlib.util

from implementations.attention.grid import KernelNotSupported

PATTERNS = ("dense", "local")  # what window_size can express


def reasons(strategy, device: str, gpu_capability) -> list[str]:
    """Why the flash_attn kernel cannot run ``strategy`` here (empty: it can)."""
    out = []
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


def flash_attention(strategy, q, k, v, causal: bool, key_padding_mask, segment_ids):
    """Self-attention (q, k, v ``(B, H, S, D)``) of a dense or local ``strategy``."""
    if strategy.name not in PATTERNS:
        raise KernelNotSupported(f"flash_attn expresses only dense and local (window_size); "
                                 f"{strategy.name} needs a mask it cannot take")
    if key_padding_mask is not None or segment_ids is not None:
        raise KernelNotSupported("flash_attn kernel: key padding and segments need "
                                 "flash_attn_varlen_func, which tbench does not wire yet")
    from flash_attn import flash_attn_func

    w = getattr(strategy, "window", -1)
    window = (w, 0 if causal else w)
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal,
                          window_size=window)
    return out.transpose(1, 2)  # (B, S, H, D) -> (B, H, S, D)
