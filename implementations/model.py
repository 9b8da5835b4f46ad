"""The Transformer of "Attention Is All You Need" and a decoder-only LM built from the same blocks.

    cfg = ModelConfig.from_preset("tiny", norm="pre")     # validated, frozen
    model = build_model(cfg)
    encoder-decoder: model(src, tgt, src_key_padding_mask=None, tgt_key_padding_mask=None) -> (B, S_tgt, V)
    decoder-only:    model(tokens, key_padding_mask=None, segment_ids=None, position_ids=None) -> (B, S, V)
    model.loss(logits, targets, ignore_index=-100) -> scalar

Masks: ``key_padding_mask`` ``(B, S)`` bool, True = real token. Self-attention uses the
configured strategy (encoder bidirectional, decoder causal; a strategy with no causal form,
linformer, is the encoder's only, the decoder's self-attention being dense); cross-attention is
always dense over the memory, with the source padding mask. The token embedding is shared by
source, target and the LM head (section 3.4 of the paper) and scaled by ``sqrt(d_model)``
(``scale_embedding``); positions are added sinusoids, a learned table (GPT-2) or rotary (applied
to q and k inside self-attention). The FFN, the norm and the biases follow ``ffn``, ``norm_type``
and ``bias`` (the presets named after GPT-2/GPT-3 and Llama 3.2 use them).

``ModelConfig`` is a model source (``implementations.source``): it builds this model, counts its
FLOPs analytically (``implementations.flops``) and makes padding-axis batches.

Profiler ranges (``implementations.regions``, off unless profiling): ``embedding``, ``lm_head``,
``loss``, and ``forward_other`` around :func:`forward_batch` (what of the forward no finer range
holds: residual adds, dropout, or a whole compiled forward); the blocks add theirs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from implementations import flops, registry
from implementations.attention.kernel import OPS
from implementations.layers import Block, KVCache, Rotary, make_norm, sinusoidal_table
from implementations.presets import PRESETS
from implementations.regions import name_modules, region

NORMS = ("post", "pre")
POSITIONS = ("sinusoidal", "rope", "learned")
FFNS = ("relu", "gelu", "swiglu")
NORM_TYPES = ("layer", "rms")
# fields added for the published architectures (GPT-2, Llama): a preset or override that sets one
# away from its default is part of the point's id (harness.suite.schema.ModelSpec), so points of
# the original Transformer keep theirs
ARCHITECTURE_FIELDS = {"ffn": "relu", "norm_type": "layer", "bias": True, "scale_embedding": True,
                       "rope_theta": 10000.0}


class TokenModel:
    """A model source (``implementations.source``) whose model is a token LM in tbench's calling
    convention (:func:`forward_batch`, ``model.loss``): tbench's own and a transformers model."""

    def make_batches(self, padding, lengths, batch_size: int, seq_len: int, seed: int) -> list:
        return padding.make_batches(lengths, batch_size, seq_len, self.vocab_size, seed, self.pad_id)

    def run_batch(self, model, batch):
        return forward_batch(model, batch, self.is_encoder_decoder)

    def batch_loss(self, model, output, batch):
        return getattr(model, "module", model).loss(output, batch.targets)  # a DeepSpeed engine's module


def architecture(fields: dict) -> dict:
    """The published-architecture fields of ``fields`` (a preset with its overrides) that differ
    from the original Transformer's: ``ARCHITECTURE_FIELDS`` away from their defaults, and a
    learned position table. Empty for every model of the paper's architecture."""
    out = {k: fields[k] for k, default in ARCHITECTURE_FIELDS.items()
           if k in fields and fields[k] != default}
    if fields.get("positions") == "learned":
        out["positions"] = "learned"
    return out


def _dense():
    return registry.create("attention", {"name": "dense"})


@dataclass(frozen=True)
class ModelConfig(TokenModel):
    """Shape and options of one model; ``n_encoder_layers == 0`` means decoder-only LM."""

    flops_method = "analytic"  # implementations.flops: the products of the architecture

    vocab_size: int  # tokens; rows of the shared embedding / columns of the LM head
    d_model: int  # C, width of the residual stream
    n_heads: int  # H; head dim D = d_model / n_heads
    d_ff: int  # hidden width of the position-wise FFN
    n_encoder_layers: int  # 0 = decoder-only
    n_decoder_layers: int  # >= 1
    max_seq_len: int  # longest sequence (size of the position tables)
    dropout: float = 0.0  # residual and embedding dropout, in [0, 1)
    norm: str = "post"  # "post" (the paper: LN(x + f(x))) or "pre" (x + f(LN(x)))
    positions: str = "sinusoidal"  # "sinusoidal" (added), "rope" (rotary q/k), "learned" (a table)
    attention: object = field(default_factory=_dense)  # attention strategy of self-attention
    ops: str = "fused"  # "eager" (module by module) or "fused" (F.layer_norm, fused attention)
    pad_id: int = 0  # padding token id
    bos_id: int = 1  # start token of decoding
    eos_id: int = 2  # end token of decoding
    n_kv_heads: int | None = None  # key/value heads (GQA); None = n_heads (MHA), 1 = MQA
    ffn: str = "relu"  # "relu" (the paper), "gelu" (GPT-2, tanh approximation), "swiglu" (Llama)
    norm_type: str = "layer"  # "layer" (LayerNorm with bias) or "rms" (RMSNorm, Llama)
    bias: bool = True  # biases in every Linear of attention and FFN (Llama has none)
    scale_embedding: bool = True  # token embedding x sqrt(d_model) (the paper; GPT-2, Llama: no)
    rope_theta: float = 10000.0  # RoPE base (Llama 3: 500000)

    def __post_init__(self):
        for name, low in (("vocab_size", 1), ("d_model", 1), ("n_heads", 1), ("d_ff", 1),
                          ("n_encoder_layers", 0), ("n_decoder_layers", 1), ("max_seq_len", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ModelConfig.{name} must be an integer >= {low}; got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig.d_model must be divisible by n_heads; got d_model="
                             f"{self.d_model}, n_heads={self.n_heads}")
        kv = self.n_kv_heads
        if kv is not None and (isinstance(kv, bool) or not isinstance(kv, int) or kv < 1
                               or self.n_heads % kv):
            raise ValueError(f"ModelConfig.n_kv_heads must be an integer >= 1 dividing n_heads="
                             f"{self.n_heads} (n_heads: MHA, 1: MQA); got {kv!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be a number in [0, 1); got {self.dropout!r}")
        for name, allowed in (("norm", NORMS), ("positions", POSITIONS), ("ops", OPS), ("ffn", FFNS),
                              ("norm_type", NORM_TYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name} must be one of {', '.join(allowed)}; "
                                 f"got {getattr(self, name)!r}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"ModelConfig.positions='rope' needs an even head dim d_model / n_heads;"
                             f" got {self.head_dim} (d_model={self.d_model}, n_heads={self.n_heads})")
        for name in ("bias", "scale_embedding"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ModelConfig.{name} must be true or false; got {getattr(self, name)!r}")
        if isinstance(self.rope_theta, bool) or not isinstance(self.rope_theta, (int, float)) \
                or self.rope_theta <= 0:
            raise ValueError(f"ModelConfig.rope_theta must be a number > 0; got {self.rope_theta!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(f"ModelConfig.{name} must be an integer in [0, vocab_size="
                                 f"{self.vocab_size}); got {value!r}")
        if not all(hasattr(self.attention, a) for a in ("attend", "allowed_pairs", "label")):
            raise ValueError("ModelConfig.attention must be an attention strategy object (from "
                             f"registry.create('attention', ...)); got {self.attention!r}")
        if not self.is_encoder_decoder and not self.attention.supports_causal:
            raise ValueError(f"ModelConfig.attention {self.attention.label} has no causal form, and "
                             "a decoder-only model's self-attention is causal; use it in an "
                             "encoder-decoder model (n_encoder_layers >= 1)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_heads``, or ``n_heads`` (MHA) when unset."""
        return self.n_kv_heads or self.n_heads

    @property
    def decoder_attention(self):
        """The strategy of the decoder's causal self-attention: ``attention``, or dense when that
        has no causal form (linformer), which then serves the encoder alone."""
        return self.attention.in_self_attention(True)

    @property
    def is_encoder_decoder(self) -> bool:
        return self.n_encoder_layers > 0

    # --- the model-source protocol (implementations.source) ------------------------------
    def shape(self) -> dict:
        """The fields (the preset with its overrides), strategies left out."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("attention", "ops")}

    def with_strategies(self, attention, ops: str, max_seq_len: int | None = None) -> "ModelConfig":
        extra = {} if max_seq_len is None else {"max_seq_len": max_seq_len}
        return dataclasses.replace(self, attention=attention, ops=ops, **extra)

    def not_supported_reasons(self, point) -> list[str]:
        """tbench's own model runs every strategy; each strategy says what it cannot do."""
        return []

    def build(self) -> "Transformer":
        """An :class:`EncoderDecoder` or, when ``n_encoder_layers == 0``, a :class:`DecoderOnly`;
        each module that opens a profiler range is named by its path (``decoder.0.ffn``)."""
        model = EncoderDecoder(self) if self.is_encoder_decoder else DecoderOnly(self)
        name_modules(model)
        return model

    def flops_breakdown(self, batch: int, seq_len: int, tgt_len: int | None = None) -> dict[str, int]:
        return flops.analytic_breakdown(self, batch, seq_len, tgt_len)

    def decode_step_flops(self, batch: int, context_len: int, src_len: int | None = None) -> int:
        return flops.analytic_decode_step_flops(self, batch, context_len, src_len)

    def param_count(self, attention=None) -> int:
        return flops.param_count(self.shape(), attention or self.attention)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ModelConfig":
        """The preset ``name`` of :data:`PRESETS` with some fields replaced."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}{registry.suggest(name, PRESETS)}; "
                             f"allowed: {', '.join(PRESETS)}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in overrides:
            if key not in known:
                raise ValueError(f"ModelConfig has no field {key!r}{registry.suggest(key, known)}; "
                                 f"allowed: {', '.join(known)}")
        return cls(**{**PRESETS[name], **overrides})


class Transformer(nn.Module):
    """Shared parts: the token embedding (tied LM head), positions, the decoder stack."""

    def __init__(self, cfg: ModelConfig, cross: bool):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # unit variance after the paper's sqrt(d_model) scale; GPT-2's 0.02 without it
        nn.init.normal_(self.tok.weight, std=cfg.d_model ** -0.5 if cfg.scale_embedding else 0.02)
        self.rotary = self.pos = None
        if cfg.positions == "rope":
            self.rotary = Rotary(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        elif cfg.positions == "learned":  # GPT-2's position table
            self.pos = nn.Embedding(cfg.max_seq_len, cfg.d_model)
            nn.init.normal_(self.pos.weight, std=0.02)
        else:
            self.register_buffer("pe", sinusoidal_table(cfg.max_seq_len, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        cross_strategy = _dense() if cross else None
        self.decoder = nn.ModuleList(Block(cfg, causal=True, cross=cross, cross_strategy=cross_strategy,
                                           rotary=self.rotary) for _ in range(cfg.n_decoder_layers))
        self.dec_norm = make_norm(cfg) if cfg.norm == "pre" else nn.Identity()
        # The LM head is a module that shares the embedding Parameter (rather than F.linear on
        # tok.weight), so ZeRO-3 gathers the weight in the head's own forward hook.
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False, device="meta")
        self.lm_head.weight = self.tok.weight  # (V, C), tied

    def embed(self, tokens: torch.Tensor, position_ids: torch.Tensor | None, offset: int = 0):
        """tokens ``(B, S)`` -> ``(x (B, S, C), position_ids (B, S))``; positions default to
        ``offset .. offset + S - 1``."""
        B, S = tokens.shape
        if position_ids is None:
            if offset + S > self.cfg.max_seq_len:
                raise ValueError(f"sequence of {offset + S} positions exceeds max_seq_len="
                                 f"{self.cfg.max_seq_len}")
            position_ids = torch.arange(offset, offset + S, device=tokens.device).expand(B, S)
        with region("embedding"):
            x = self.tok(tokens)  # (B, S, C)
            if self.cfg.scale_embedding:
                x = x * math.sqrt(self.cfg.d_model)
            if self.pos is not None:
                x = x + self.pos(position_ids)  # (B, S, C)
            elif self.rotary is None:
                x = x + self.pe[position_ids].to(x.dtype)  # (B, S, C)
            return self.drop(x), position_ids

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, S, C)`` -> logits ``(B, S, V)`` through the tied embedding."""
        h = self.dec_norm(h)
        with region("lm_head"):
            return self.lm_head(h)

    def new_cache(self, max_len: int) -> list[KVCache]:
        """One empty self-attention K/V cache per decoder layer, for ``max_len`` positions,
        keeping only what the attention pattern's decode step reads (its ``cache_policy``)."""
        return [KVCache(max_len, self.cfg.decoder_attention.cache_policy()) for _ in self.decoder]

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Cross-entropy of ``(B, S, V)`` logits against ``(B, S)`` targets, mean over the targets
        that are not ``ignore_index`` (computed in fp32)."""
        with region("loss"):
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                   ignore_index=ignore_index)


class EncoderDecoder(Transformer):
    """Encoder (bidirectional self-attention + FFN) and decoder (causal self-attention,
    cross-attention to the encoder output, FFN)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, cross=True)
        self.encoder = nn.ModuleList(Block(cfg, causal=False, cross=False, rotary=self.rotary)
                                     for _ in range(cfg.n_encoder_layers))
        self.enc_norm = make_norm(cfg) if cfg.norm == "pre" else nn.Identity()

    def encode(self, src: torch.Tensor, src_key_padding_mask=None) -> torch.Tensor:
        """src ``(B, S_src)`` -> memory ``(B, S_src, C)``."""
        x, pos = self.embed(src, None)
        for block in self.encoder:
            x = block(x, key_padding_mask=src_key_padding_mask, position_ids=pos)
        return self.enc_norm(x)

    def decode(self, tgt, memory=None, src_key_padding_mask=None, tgt_key_padding_mask=None,
               cache: list[KVCache] | None = None, memory_kv=None) -> torch.Tensor:
        """tgt ``(B, S_tgt)`` -> logits ``(B, S_tgt, V)``. With ``cache`` the tokens continue
        the cached ones (and ``tgt_key_padding_mask`` covers all of them); ``memory_kv`` is the
        per-layer cross-attention K/V of :meth:`project_memory` (else taken from ``memory``)."""
        offset = cache[0].length if cache else 0
        x, pos = self.embed(tgt, None, offset)
        for i, block in enumerate(self.decoder):
            x = block(x, key_padding_mask=tgt_key_padding_mask, position_ids=pos, memory=memory,
                      memory_mask=src_key_padding_mask, cache=cache[i] if cache else None,
                      memory_kv=memory_kv[i] if memory_kv else None)
        return self.head(x)

    def project_memory(self, memory: torch.Tensor) -> list:
        """Cross-attention K/V of every decoder layer, computed once for decoding."""
        return [block.cross_attn.project_memory(memory) for block in self.decoder]

    def forward(self, src, tgt, src_key_padding_mask=None, tgt_key_padding_mask=None):
        memory = self.encode(src, src_key_padding_mask)  # (B, S_src, C)
        return self.decode(tgt, memory, src_key_padding_mask, tgt_key_padding_mask)


class DecoderOnly(Transformer):
    """Decoder-only LM: causal self-attention + FFN blocks. Packed sequences pass
    ``segment_ids`` (attention stays within a segment) and ``position_ids`` (restart at 0)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, cross=False)

    def forward(self, tokens, key_padding_mask=None, segment_ids=None, position_ids=None,
                cache: list[KVCache] | None = None):
        """tokens ``(B, S)`` -> logits ``(B, S, V)``. With ``cache`` the tokens continue the
        cached ones (masks then cover all ``cache_length + S`` keys)."""
        offset = cache[0].length if cache else 0
        x, pos = self.embed(tokens, position_ids, offset)
        for i, block in enumerate(self.decoder):
            x = block(x, key_padding_mask=key_padding_mask, segment_ids=segment_ids,
                      position_ids=pos, cache=cache[i] if cache else None)
        return self.head(x)


def build_model(cfg):
    """The model of model source ``cfg`` (``implementations.source``): for a ``ModelConfig`` an
    :class:`EncoderDecoder` or :class:`DecoderOnly` (``ModelConfig.build``)."""
    return cfg.build()


def forward_batch(model, batch, enc_dec: bool) -> torch.Tensor:
    """Logits ``(B, S, V)`` of a padding-axis ``Batch`` (``implementations.padding.Batch``).

    ``model`` is a built model or a wrapper that passes its arguments on (``torch.compile``, a
    DeepSpeed engine). Encoder-decoder: teacher forcing, the target side reads the same
    sequences as the source, both masked by ``key_padding_mask``. Decoder-only: also the packed
    rows' ``segment_ids`` and ``position_ids``.
    """
    with region("forward_other"):
        if enc_dec:
            mask = batch.key_padding_mask
            return model(batch.tokens, batch.tokens, src_key_padding_mask=mask,
                         tgt_key_padding_mask=mask)
        return model(batch.tokens, key_padding_mask=batch.key_padding_mask,
                     segment_ids=batch.segment_ids, position_ids=batch.position_ids)
