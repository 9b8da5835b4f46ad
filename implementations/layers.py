"""Transformer building blocks: LayerNorm / RMSNorm, FFN (ReLU, GELU, SwiGLU), positions,
multi-head attention and the block.

One block class serves all three stacks (as in "Attention Is All You Need", section 3.1):
    encoder layer:       self-attention (bidirectional)              + FFN
    decoder layer:       self-attention (causal) + cross-attention    + FFN
    decoder-only layer:  self-attention (causal)                      + FFN
Each sub-layer is wrapped as ``LayerNorm(x + Dropout(f(x)))`` (post-norm, the paper) or
``x + Dropout(f(LayerNorm(x)))`` (pre-norm, GPT-2 and later). The published architectures the
presets name differ in the parts: GPT-2 uses a GELU FFN (tanh approximation) and biases
everywhere; Llama RMSNorm, a SwiGLU FFN (three matrices) and no biases (``ModelConfig.ffn``,
``norm_type``, ``bias``).

``ops="eager"`` runs everything module by module (hand-written LayerNorm from mean/var, attention
as matmul-softmax-matmul); ``ops="fused"`` uses ``F.layer_norm`` and the attention strategy's
fused kernels. Both have the same parameters, so one state dict loads into either.

Layout: activations ``(B, S, C)``; attention ``(B, H, S, D)`` with ``C = H * D``.

Each module that is a part a user reasons about opens a profiler range
(``implementations.regions``: free unless a profiled pass turned them on): ``norm``, ``ffn`` and
``attention`` (with ``proj`` / ``rotary`` / ``out_proj`` inside it, and the kernel's own parts),
named by the module's path in the model (``region_name``, set by ``regions.name_modules``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from implementations.attention.kernel import inner_attention
from implementations.kv_cache import KVCache
from implementations.regions import region


class LayerNorm(nn.Module):
    """LayerNorm over the last dim; eager computes it from mean and (biased) variance by hand."""

    region_name = ""  # its path in the model: the ``where`` of its profiler range

    def __init__(self, dim: int, ops: str, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.ops, self.eps = ops, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with region("norm", self.region_name):
            return self._norm(x)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.ops == "fused":
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        xf = x.float()  # statistics in fp32 even under autocast, as F.layer_norm does
        mean = xf.mean(-1, keepdim=True)
        var = xf.var(-1, keepdim=True, unbiased=False)
        y = ((xf - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)
        return y * self.weight + self.bias


class RMSNorm(LayerNorm):
    """RMSNorm (Llama): ``x / sqrt(mean(x^2) + eps) * weight``, no centring and no bias; eager
    computes it by hand in fp32, fused with ``F.rms_norm``."""

    def __init__(self, dim: int, ops: str, eps: float = 1e-5):
        nn.Module.__init__(self)
        self.weight = nn.Parameter(torch.ones(dim))
        self.ops, self.eps = ops, eps

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.ops == "fused":
            return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def make_norm(cfg) -> LayerNorm:
    """The norm of ``cfg.norm_type``: ``layer`` (LayerNorm, with bias) or ``rms`` (RMSNorm)."""
    return (RMSNorm if cfg.norm_type == "rms" else LayerNorm)(cfg.d_model, cfg.ops)


class FeedForward(nn.Module):
    """Position-wise FFN. ``relu`` (the paper) and ``gelu`` (GPT-2's tanh approximation):
    ``fc2(act(fc1(x)))``; ``swiglu`` (Llama): ``fc2(silu(gate(x)) * fc1(x))``, three matrices."""

    region_name = ""

    def __init__(self, d_model: int, d_ff: int, ops: str, activation: str = "relu", bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)  # the up projection
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if activation == "swiglu" else None
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.activation = activation
        self.inplace = ops == "fused"  # no extra (B, S, d_ff) buffer for the activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with region("ffn", self.region_name):
            h = self.fc1(x)  # (B, S, d_ff)
            if self.activation == "swiglu":
                h = F.silu(self.gate(x)) * h
            elif self.activation == "gelu":
                h = F.gelu(h, approximate="tanh")
            else:
                h = F.relu(h, inplace=self.inplace)
            return self.fc2(h)


def sinusoidal_table(n: int, dim: int) -> torch.Tensor:
    """``(n, dim)``: PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(same)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]  # (n, 1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = pos * inv_freq  # (n, ceil(dim/2))
    table = torch.zeros(n, dim)
    table[:, 0::2] = angles.sin()
    table[:, 1::2] = angles.cos()[:, : dim // 2]
    return table


class Rotary(nn.Module):
    """Rotary position embedding (RoPE), rotate-half convention, applied to q and k per head.

    Rotating q at position m and k at position n by angles proportional to m and n makes
    ``q . k`` depend only on ``m - n``; positions come from ``position_ids`` so packed sequences
    restart at 0 per segment.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):  # Llama 3: 500000
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        freqs = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq  # (L, D/2)
        angles = torch.cat([freqs, freqs], dim=-1)  # (L, D)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """x ``(B, H, S, D)``, position_ids ``(B, S)`` -> rotated x, same shape and dtype."""
        cos = self.cos[position_ids][:, None].to(x.dtype)  # (B, 1, S, D)
        sin = self.sin[position_ids][:, None].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # (B, H, S, D/2) each
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class MultiHeadAttention(nn.Module):
    """``W_o · concat_h attend(x W_q^h, m W_k^h, m W_v^h)`` with ``m = x`` (self) or memory (cross).

    The pattern of keys each query sees is the attention ``strategy``; a pattern that owns
    parameters (linformer's projections) has them made here, for sequences up to ``max_len``, as
    ``self.pattern``. Rotary positions (if any) rotate q and k of self-attention only
    (cross-attention has no shared position axis).
    """

    region_name = ""

    def __init__(self, d_model: int, n_heads: int, strategy, ops: str, causal: bool,
                 rotary: Rotary | None = None, n_kv_heads: int | None = None, max_len: int = 0,
                 bias: bool = True):
        super().__init__()
        self.pattern = strategy.make_weights(max_len)  # parameters the pattern owns (linformer)
        self.n_kv_heads = n_kv_heads or n_heads  # GQA: each K/V head serves n_heads / n_kv_heads
        kv_width = self.n_kv_heads * (d_model // n_heads)
        self.W_q = nn.Linear(d_model, d_model, bias=bias)
        self.W_k = nn.Linear(d_model, kv_width, bias=bias)
        self.W_v = nn.Linear(d_model, kv_width, bias=bias)
        self.W_o = nn.Linear(d_model, d_model, bias=bias)
        self.n_heads, self.strategy, self.ops, self.causal = n_heads, strategy, ops, causal
        self.rotary = rotary

    def heads(self, x: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """``(B, S, n * D)`` -> ``(B, n, S, D)`` (``n``: the query heads unless given)."""
        B, S, width = x.shape
        n = n or self.n_heads
        return x.view(B, S, n, width // n).transpose(1, 2)

    def grouped_queries(self, q, k, v) -> torch.Tensor:
        """Unmasked attention of q ``(B, H, S_q, D)`` over k, v ``(B, H_kv, n, D)`` without
        repeating K/V (a cached decode step, which reads only ``H_kv`` heads of the cache): the
        queries of each K/V head's group become rows of one ``(B, H_kv, group * S_q, D)``
        attention. Exact: with no mask, every row attends to the same keys either way."""
        B, H, S_q, D = q.shape
        grouped = q.reshape(B, self.n_kv_heads, H // self.n_kv_heads * S_q, D)
        return inner_attention(grouped, k, v, None, False, self.ops).reshape(B, H, S_q, D)

    def forward(self, x, memory=None, key_padding_mask=None, segment_ids=None, position_ids=None,
                cache: KVCache | None = None, memory_kv=None):
        """x ``(B, S, C)`` -> ``(B, S, C)``.

        Self-attention: ``memory`` is None; ``position_ids (B, S)`` feed RoPE; with ``cache`` the
        new K/V are appended and the queries sit at ``q_offset = cache.length``. A one-token step
        then gets exactly the keys its pattern allows from the cache (``implementations.kv_cache``)
        and attends to them without a mask; otherwise the mask covers all cached keys.
        Cross-attention: K/V come from ``memory (B, S_m, C)``, or from ``memory_kv``
        (precomputed by :meth:`project_memory`, for decoding).
        """
        with region("attention", self.region_name):
            B, S, C = x.shape
            q, k, v, offset = self.project(x, memory, position_ids, cache, memory_kv)
            if offset is None:  # the cache chose the allowed keys: (B, H, 1, D) over (B, H, n, D)
                if key_padding_mask is not None or segment_ids is not None:
                    raise ValueError("a cached decode step takes no key_padding_mask or segment_ids")
                y = self.grouped_queries(q, k, v)
            else:  # GQA: the kernel reads the H_kv heads (SDPA, flex) or repeats them
                y = self.strategy.attend(q, k, v, causal=self.causal, key_padding_mask=key_padding_mask,
                                         segment_ids=segment_ids, q_offset=offset, ops=self.ops,
                                         weights=self.pattern)
            with region("attention", "out_proj"):
                y = y.transpose(1, 2).reshape(B, S, C)  # (B, S, H*D)
                return self.W_o(y)

    def project(self, x, memory, position_ids, cache, memory_kv):
        """q ``(B, H, S, D)``, k and v ``(B, H, S_k, D)`` and the absolute position of query 0
        (None: k and v are exactly the keys the one query may attend, chosen by the cache)."""
        with region("attention", "proj"):
            q = self.heads(self.W_q(x))  # (B, H, S, D)
            offset = 0
            if memory is None and memory_kv is None:
                k, v = self.project_memory(x)  # (B, H_kv, S, D)
            else:
                k, v = memory_kv if memory_kv is not None else self.project_memory(memory)
        if memory is None and memory_kv is None:
            if self.rotary is not None:
                with region("attention", "rotary"):
                    q, k = self.rotary(q, position_ids), self.rotary(k, position_ids)
            if cache is not None:
                k, v, offset, exact = cache.append(k, v)  # (B, H, S_k, D): what the policy reads
                offset = None if exact else offset
        return q, k, v, offset

    def project_memory(self, memory: torch.Tensor):
        """K/V of ``memory (B, S_m, C)`` (cross-attention; ``x`` itself for self-attention):
        two ``(B, H_kv, S_m, D)`` tensors."""
        return self.heads(self.W_k(memory), self.n_kv_heads), self.heads(self.W_v(memory), self.n_kv_heads)


class Block(nn.Module):
    """One Transformer layer: self-attention, optional cross-attention, FFN, each a residual
    sub-layer with LayerNorm placed after (``norm="post"``) or before (``"pre"``)."""

    def __init__(self, cfg, causal: bool, cross: bool, cross_strategy=None,
                 rotary: Rotary | None = None):
        super().__init__()
        C = cfg.d_model
        strategy = cfg.decoder_attention if causal else cfg.attention
        self.self_attn = MultiHeadAttention(C, cfg.n_heads, strategy, cfg.ops, causal, rotary,
                                            cfg.kv_heads, cfg.max_seq_len, bias=cfg.bias)
        self.norm1 = make_norm(cfg)
        self.cross_attn = self.norm2 = None
        if cross:
            self.cross_attn = MultiHeadAttention(C, cfg.n_heads, cross_strategy, cfg.ops, False,
                                                 n_kv_heads=cfg.kv_heads, bias=cfg.bias)
            self.norm2 = make_norm(cfg)
        self.ffn = FeedForward(C, cfg.d_ff, cfg.ops, cfg.ffn, cfg.bias)
        self.norm3 = make_norm(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.pre = cfg.norm == "pre"

    def sublayer(self, x, norm, fn):
        if self.pre:
            return x + self.drop(fn(norm(x)))
        return norm(x + self.drop(fn(x)))

    def forward(self, x, key_padding_mask=None, segment_ids=None, position_ids=None,
                memory=None, memory_mask=None, memory_kv=None, cache=None):
        """x ``(B, S, C)`` -> ``(B, S, C)``; memory ``(B, S_m, C)`` with ``memory_mask (B, S_m)``."""
        x = self.sublayer(x, self.norm1, lambda h: self.self_attn(
            h, key_padding_mask=key_padding_mask, segment_ids=segment_ids,
            position_ids=position_ids, cache=cache))
        if self.cross_attn is not None:
            x = self.sublayer(x, self.norm2, lambda h: self.cross_attn(
                h, memory=memory, key_padding_mask=memory_mask, memory_kv=memory_kv))
        return self.sublayer(x, self.norm3, self.ffn)
