"""The attention-strategy contract shared by every pattern.

A strategy is a frozen dataclass that says which keys ``j`` a query ``i`` may attend to
(:meth:`allowed`), combined with an optional causal rule (``j <= i`` in absolute positions) and
an optional key-padding mask. Everything else (the reference mask, the exact FLOP-relevant pair
count, the two implementations) follows from that rule and from :meth:`groups`, the partition of
queries into small groups with candidate keys that a sparse strategy uses to stay O(S * keys).

Layout everywhere: ``(B, H, S, D)`` (batch, heads, sequence, head dim). Masks are bool,
``True`` = may attend.
"""
from __future__ import annotations

import shutil
from typing import ClassVar, Literal

import pydantic
import torch
from pydantic import Field

from implementations.attention import flash, flex, kernel
from implementations.attention.grid import Groups
from implementations.registry import ADDED_LATER, STRICT, Context, Strategy, create

OWN_KERNELS = {"flex": flex.flex_attention, "flash_attn": flash.flash_attention}
KERNELS = {  # kernel -> (how it computes a pattern, where it runs, what it cannot do)
    "auto": ("sparse patterns group by group (grouped kernel), dense in one call; inside, the ops "
             "axis: eager matmul-softmax-matmul or SDPA (ops.sdpa_backend)", "cpu, cuda",
             "-"),
    "mask": ("one S x S bool mask from the pattern's rule, no grouping: what passing a mask to "
             "SDPA costs (O(S^2) for every pattern)", "cpu, cuda", "-"),
    "flex": ("FlexAttention, compiled, with a block mask from the pattern's rule (compile_s and "
             "flex_block_mask_ms reported)", "cpu (fp32/fp16/bf16), cuda",
             "train on CPU (no backward in torch 2.13); needs a C++ compiler on CPU"),
    "flash_attn": ("the flash-attn package's flash_attn_func with window_size; key padding and "
                   "packed rows through flash_attn_varlen_func (a padded position's output is 0)",
                   "cuda (>= sm80), fp16/bf16", "patterns other than dense and local; fp32 and "
                   "tf32; local with padding inside a sequence; a segment id recurring apart in "
                   "a row; CPU; without the package"),
}


def diagonal_pairs(S: int, causal: bool, step: int = 1, reach: int | None = None) -> int:
    """Exact count of ``(i, j)`` in ``[0, S)^2`` with ``(i - j) % step == 0`` and
    ``|i - j| <= reach`` (no limit when ``None``), and ``j <= i`` when ``causal``."""
    top = S - 1 if reach is None else min(reach, S - 1)
    n = max(top, 0) // step  # diagonals d = step, 2 step, ..., n step on each side
    off = n * S - step * n * (n + 1) // 2  # sum over those d of (S - d)
    return S + (1 if causal else 2) * off


@pydantic.dataclasses.dataclass(frozen=True, config=STRICT)
class AttentionStrategy(Strategy):
    """Base class of the patterns: each one a class registered with ``@register("attention", name)``
    (which makes it a frozen, validated dataclass). Every pattern has the ``kernel`` parameter:
    how its allowed pairs are computed (see ``implementations.attention``)."""

    kernel: Literal["auto", "mask", "flex", "flash_attn"] = Field(
        "auto", json_schema_extra=ADDED_LATER, kw_only=True,
        description="how the pattern is computed: auto (sparse patterns group by group, dense in "
                    "one call; eager or SDPA by the ops axis), mask (one S x S mask, no grouping), "
                    "flex (FlexAttention with a block mask from the pattern's rule), flash_attn "
                    "(the flash-attn package: dense and local only, CUDA)")

    everything_allowed = False  # True for dense: the causal rule is the only mask
    supports_causal = True  # False: no causal form (linformer); a decoder's self-attention is dense
    refuses = "-"  # what the pattern itself cannot run, in words (tbench list; the kernels add theirs)
    length_params: ClassVar[tuple[str, ...]] = ()  # parameters in tokens (or positions): <= max_seq_len

    @property
    def compiles_on_first_call(self) -> bool:
        """Whether the first call compiles (FlexAttention): the worker times it as ``compile_s``."""
        return self.kernel == "flex"

    @property
    def pattern_label(self) -> str:
        """The pattern and its parameters, without the kernel."""
        return self.name

    @property
    def label(self) -> str:
        return self.pattern_label + ("" if self.kernel == "auto" else f"_{self.kernel}")

    # --- the rule -------------------------------------------------------------------------
    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Bool tensor, broadcast of ``i`` and ``j``: may query position ``i`` see key
        position ``j`` (before the causal rule and padding)."""
        raise NotImplementedError

    def groups(self, S: int, causal: bool) -> Groups | None:
        """Partition of the ``S`` queries of a self-attention into groups, with candidate keys.

        Returns a :class:`~implementations.attention.grid.Groups` of two affine position grids
        (plain ints, so the kernel takes views and traces under ``torch.compile`` without graph
        breaks): every query ``0..S-1`` appears exactly once in ``q``, laid out as a permutation
        of the axes of a row-major ``0..N-1`` (``N >= S``, positions ``>= S`` being padding), and
        the keys each query may see (under ``causal``) are among its group's ``k``. ``None``
        (dense) means one group holding everything.
        """
        return None

    def allowed_pairs(self, S: int, causal: bool) -> int:
        """Exact number of allowed ``(query, key)`` pairs of a length-``S`` self-attention."""
        raise NotImplementedError

    def scored_pairs(self, S: int, causal: bool) -> int:
        """``(query, key)`` scores the pattern needs computed: its allowed pairs, unless it picks
        keys by score (topk computes every score)."""
        return self.allowed_pairs(S, causal)

    def in_self_attention(self, causal: bool) -> "AttentionStrategy":
        """The strategy a self-attention runs: this one, or dense where it must be causal and this
        pattern has no causal form (linformer in a decoder: ``ModelConfig.decoder_attention``)."""
        return self if not causal or self.supports_causal else create("attention", {"name": "dense"})

    def projection_products(self, S: int) -> int:
        """Length-``D`` products per K/V head a length-``S`` self-attention spends before its pairs
        (linformer's sequence projections); 0 for a pattern of pairs."""
        return 0

    def score_elements(self, S: int, causal: bool) -> int:
        """Scores one (sequence, head) holds when computed eagerly: ``S * S`` for one call, the
        groups' scores for a grouped pattern."""
        groups = self.groups(S, causal)
        return S * S if groups is None else groups.q.count * groups.q.length * groups.k.length

    def make_weights(self, max_len: int):
        """Parameters the pattern owns in each attention layer (an ``nn.Module`` passed back to
        :meth:`attend` as ``weights``), or None: a pattern of pairs owns none."""
        return None

    def param_count(self, max_len: int) -> int:
        """Parameters of :meth:`make_weights` (0 for a pattern of pairs)."""
        return 0

    def cache_policy(self):
        """What a causal decode step must keep and read (``implementations.kv_cache``), or
        None: keep every key and mask each step (correct, O(S) per token)."""
        return None

    # --- derived (every pattern runs on CPU and CUDA in every dtype SDPA supports) --------
    def dense_mask(self, S_q: int, S_k: int, causal: bool, q_offset: int = 0,
                   device=None) -> torch.Tensor:
        """Reference ``(S_q, S_k)`` bool mask: query ``r`` is absolute position ``q_offset + r``;
        key ``j`` is allowed iff ``allowed(i, j)`` and (if ``causal``) ``j <= i``. O(S_q * S_k)."""
        i = torch.arange(S_q, device=device)[:, None] + q_offset  # (S_q, 1)
        j = torch.arange(S_k, device=device)[None, :]  # (1, S_k)
        mask = self.allowed(i, j).expand(S_q, S_k)
        return mask & (j <= i) if causal else mask.clone()

    def attend(self, q, k, v, *, causal: bool, key_padding_mask=None, segment_ids=None,
               q_offset: int = 0, ops: str = "eager", weights=None) -> torch.Tensor:
        """Attention under this pattern. Returns ``(B, H, S_q, D)``.

        q ``(B, H, S_q, D)``; k, v ``(B, H_kv, S_k, D)`` (GQA: ``H_kv`` divides ``H``; SDPA and
        flex read each K/V head for its query heads, the other paths repeat K/V);
        ``key_padding_mask`` ``(B, S_k)`` bool, True = real token; ``segment_ids`` ``(B, S_k)``
        int, one id per absolute position: query
        ``q_offset + r`` sees only keys with its id; ``q_offset`` = absolute position of query 0
        (decoding with a KV cache: ``S_q = 1, q_offset = S_k - 1``); ``ops``: ``"eager"`` (plain
        tensor ops, textbook matmul-softmax-matmul) or ``"fused"``
        (``scaled_dot_product_attention``); ``weights``: the layer's :meth:`make_weights` (None
        for a pattern of pairs). A query with no allowed key returns zeros.

        Self-attention (``S_q == S_k``, ``q_offset == 0``) of a sparse pattern runs group by group
        (never an ``S x S`` score matrix); any other shape (decoding, cross-attention) uses one
        ``(S_q, S_k)`` mask, which is O(S) per decoded token.
        """
        kernel.check_inputs(q, k, v, key_padding_mask, segment_ids, q_offset, ops)
        S_q, S_k = q.shape[-2], k.shape[-2]
        if S_q == S_k and q_offset == 0:  # self-attention: the kernel's own way
            if self.kernel in OWN_KERNELS:
                return OWN_KERNELS[self.kernel](self, q, k, v, bool(causal), key_padding_mask,
                                                segment_ids)
            plan = None if self.kernel == "mask" else kernel.plan_for(self, S_q, bool(causal),
                                                                      q.device, q.dtype)
            if plan is not None:
                return kernel.grouped_attention(plan, q, k, v, key_padding_mask, segment_ids, ops)
        return kernel.masked_attention(self, q, k, v, bool(causal), key_padding_mask, segment_ids,
                                       q_offset, ops)

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        if self.kernel == "flash_attn":
            return flash.reasons(self, ctx.device, ctx.gpu_capability, ctx.precision)
        if self.kernel == "flex" and ctx.device == "cpu":
            out = []
            if ctx.workload == "train":
                out.append("FlexAttention has no backward on CPU (torch 2.13): forward only")
            if not (shutil.which("g++") or shutil.which("c++")):
                out.append("FlexAttention on CPU is compiled and needs a C++ compiler (none on "
                           "PATH)")
            return out
        return []
