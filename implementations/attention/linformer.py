"""Linformer: keys and values projected along the sequence, from length S to k (Wang et al. 2020)."""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from implementations.attention import kernel
from implementations.attention.base import AttentionStrategy
from implementations.attention.grid import KernelNotSupported
from implementations.regions import region
from implementations.registry import LENGTH_CAP, register

CAUSAL = ("linformer mixes every position into each projected key, so a query would see the "
          "future: the paper's projection is not causal (no causal, decoding or packed segments)")


class LinformerProjections(nn.Module):
    """The learned projections of one attention layer: ``E`` (keys) and ``F`` (values), each
    ``(k, max_len)``, shared by every head (the paper's headwise sharing); ``F`` is ``E`` when
    ``share_kv`` (its key-value sharing). Position ``j`` of a length-``S`` sequence is column ``j``:
    a shorter sequence uses the first ``S`` columns. Drawn from N(0, 1/k), the Johnson-Lindenstrauss
    projection of the paper's analysis."""

    def __init__(self, k: int, max_len: int, share_kv: bool):
        super().__init__()
        self.E = nn.Parameter(torch.randn(k, max_len) * k ** -0.5)  # (k, max_len)
        self.F = None if share_kv else nn.Parameter(torch.randn(k, max_len) * k ** -0.5)

    def forward(self, k: torch.Tensor, v: torch.Tensor):
        """k, v ``(B, H_kv, S, D)`` -> ``(B, H_kv, k, D)`` each: ``E[:, :S] @ k``, ``F[:, :S] @ v``."""
        S = k.shape[-2]
        if S > self.E.shape[1]:
            raise ValueError(f"linformer's projections cover {self.E.shape[1]} positions "
                             f"(max_seq_len); got a sequence of {S}")
        E = self.E[:, :S]
        F = E if self.F is None else self.F[:, :S]
        # (k, S) x (B, H_kv, S, D): einsum makes it one GEMM over S; ``E @ k`` broadcasts E per
        # head, 2x slower forward and 1.5x forward + backward at S=16K, k=256 on CPU
        return torch.einsum("rs,bhsd->bhrd", E, k), torch.einsum("rs,bhsd->bhrd", F, v)


@register("attention", "linformer")
class LinformerAttention(AttentionStrategy):
    """Linformer: keys and values projected along the sequence from S to k by learned E, F.

    Each query attends, unmasked, to ``k`` projected keys ``E[:, :S] K`` with values
    ``F[:, :S] V`` (E, F: learned ``(k, max_len)`` parameters of each layer, shared by its heads).

    Not a pattern of pairs: every position feeds every projected key, so there is no positional
    rule (``allowed`` is all-true and only documents that). Time and memory O(S * k): the
    projections cost ``2 * k * S * D`` FLOPs per K/V head each, the attention ``S * k`` pairs
    (``allowed_pairs``), and no ``S x S`` tensor exists. ``k > S`` is allowed (and computes more
    than dense). **Causal is not supported**, with the reason: the projection mixes future
    positions into every key, and the paper defines no causal variant; in an encoder-decoder
    model it is the encoder's self-attention and the decoder's stays dense
    (``ModelConfig.decoder_attention``), a decoder-only model cannot use it. Key padding zeroes the
    padded keys and values before the projection, so a right-padded sequence gives exactly what
    the sequence alone gives; a row with no real key returns zeros. Packed segments cannot be
    kept apart (``not_supported``). With rotary positions the keys arrive rotated and are
    projected as they are (the paper uses learned absolute positions; this combination is
    ours). Any ``kernel`` but ``auto`` is ``not_supported``: the
    attention after the projection is unmasked, and the ops axis already computes it with eager
    or SDPA.
    """

    length_params = ('k',)  # in tokens: at most the model's max_seq_len

    k: int = Field(256, ge=1, le=LENGTH_CAP, description="projected length: keys and values are projected from S to k")
    share_kv: bool = Field(False, description="one projection for keys and values (E = F)")

    supports_causal = False
    refuses = ("causal self-attention: a decoder-only model (an encoder-decoder's decoder "
               "self-attention is dense); packed segments; any kernel but auto")

    @property
    def pattern_label(self) -> str:
        return f"linformer_k{self.k}" + ("_shared" if self.share_kv else "")

    def not_supported_reasons(self, ctx) -> list[str]:
        out = []
        if self.kernel != "auto":
            out.append(f"linformer's attention after the projection is unmasked: auto computes it "
                       f"(eager or SDPA by the ops axis); no rule for the {self.kernel} kernel")
        if ctx.decoder_only:
            out.append(f"{CAUSAL}; a decoder-only model's self-attention is causal (use an "
                       "encoder-decoder model: its encoder uses linformer)")
        return out

    def make_weights(self, max_len: int) -> LinformerProjections:
        return LinformerProjections(self.k, max_len, self.share_kv)

    def param_count(self, max_len: int) -> int:
        return self.k * max_len * (1 if self.share_kv else 2)

    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Every position feeds every projected key (no positional rule)."""
        return torch.ones(torch.broadcast_shapes(i.shape, j.shape), dtype=torch.bool,
                          device=i.device)

    def allowed_pairs(self, S: int, causal: bool) -> int:
        """(query, projected key) pairs: ``S * k``."""
        if causal:
            raise ValueError(CAUSAL)
        return S * self.k

    def projection_products(self, S: int) -> int:
        return 2 * self.k * S  # E K and F V: k * S length-D products each

    def score_elements(self, S: int, causal: bool) -> int:
        return S * self.k

    def attend(self, q, k, v, *, causal: bool, key_padding_mask=None, segment_ids=None,
               q_offset: int = 0, ops: str = "eager", weights=None) -> torch.Tensor:
        kernel.check_inputs(q, k, v, key_padding_mask, segment_ids, q_offset, ops)
        if causal or segment_ids is not None:
            raise KernelNotSupported(CAUSAL)
        if self.kernel != "auto":
            raise KernelNotSupported(f"linformer runs on the auto kernel only; got {self.kernel}")
        if not isinstance(weights, LinformerProjections):
            raise ValueError("linformer attends through its learned projections: pass "
                             "weights=strategy.make_weights(max_len)")
        with region("attention", "kv_proj"):
            if key_padding_mask is not None:  # padded keys and values contribute nothing
                real = key_padding_mask[:, None, :, None]  # (B, 1, S_k, 1)
                k, v = k.masked_fill(~real, 0.0), v.masked_fill(~real, 0.0)
            k, v = weights(k, v)  # (B, H_kv, k, D)
        return kernel.inner_attention(q, k, v, None, False, ops)  # GQA: SDPA or repeat
