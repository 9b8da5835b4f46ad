"""Model FLOPs per forward pass and per training step, per attention strategy; parameter counts.

Every function takes a model source (``implementations.source``) and asks it for its forward
FLOPs by part (``cfg.flops_breakdown``) or its decode step: tbench's own Transformer answers
with the analytic count below (:func:`analytic_breakdown`), a ``transformers`` model or an
``nn.Module`` factory with ``torch.utils.flop_counter`` on a meta pass
(``implementations.hf.counting``), its attention charged the same allowed pairs. The analytic
count of tbench's Transformer:

Counted, as ``2 * m * n * k`` per matrix product (one multiply + one add per term):
  * every Linear: self-attention W_q, W_k, W_v, W_o; cross-attention W_q, W_o on the target and
    W_k, W_v on the memory; the FFN's two layers (three for SwiGLU: gate, up, down); the LM head
    (tied embedding, all positions);
  * attention itself: ``q k^T`` and ``p v`` cost ``2 * D`` each per allowed (query, key) pair and
    head, so ``4 * pairs * D * H`` per sequence and layer. Self-attention pairs come from
    ``strategy.allowed_pairs(S, causal)`` (encoder bidirectional, decoder causal): a causal or
    sparse pattern is charged only the pairs it may attend, so MFU is never inflated by work a
    kernel does on masked-out scores. A pattern that picks its keys by score (topk) is charged
    ``q k^T`` over every pair it must score (``strategy.scored_pairs``) and ``p v`` over the
    pairs it keeps. Linformer is charged its ``S * k`` pairs plus its sequence projections of
    K and V, ``2 * k * S * D`` each per K/V head (``strategy.projection_products``); the decoder
    of a model whose pattern has no causal form is dense (``cfg.decoder_attention``).
    Cross-attention is dense: ``S_tgt * S_src`` pairs.
Not counted (as in the usual 6N-style accounting and in ``torch.utils.flop_counter``):
bias adds, softmax, LayerNorm, ReLU, residual adds, embedding lookups, positions, dropout.
Key padding is not known here: padded positions are charged like real ones.

A training step is forward + backward = 3 x forward (the backward of every product computes two
products of the same size: the gradient of the input and of the weight).
"""
from __future__ import annotations


def flops_breakdown(cfg, batch: int, seq_len: int, tgt_len: int | None = None) -> dict[str, int]:
    """Forward FLOPs of model source ``cfg`` by part (keys of :func:`analytic_breakdown`)."""
    return cfg.flops_breakdown(batch, seq_len, tgt_len)


def palm_forward_flops(cfg, batch: int, seq_len: int, tgt_len: int | None = None) -> int | None:
    """Forward FLOPs in the published MFU convention (PaLM, appendix B; nanoGPT's
    ``estimate_mfu``): the same products as :func:`flops_breakdown`, but every self-attention
    layer charged all ``S * S`` (query, key) pairs, ``4 * S^2 * D * H`` per sequence -- causal,
    sparse and projected patterns alike. Per token of a training step that is
    ``6 N + 12 L H D S`` with N the matrix parameters. None for a source whose count has no
    self-attention part (a module factory's opaque count)."""
    parts = dict(flops_breakdown(cfg, batch, seq_len, tgt_len))
    if "decoder.self_attn.scores" not in parts or not cfg.n_heads or not cfg.head_dim:
        return None
    dec_len = (seq_len if tgt_len is None else tgt_len) if cfg.is_encoder_decoder else seq_len
    for stack, layers, S in (("encoder", cfg.n_encoder_layers, seq_len),
                             ("decoder", cfg.n_decoder_layers, dec_len)):
        parts[f"{stack}.self_attn.scores"] = layers * 4 * S * S * cfg.head_dim * cfg.n_heads * batch
    return sum(parts.values())


def palm_train_step_flops(cfg, batch: int, seq_len: int, tgt_len: int | None = None) -> int | None:
    """:func:`palm_forward_flops` of a training step: 3 x forward (``6N + 12LHQT`` per token)."""
    forward = palm_forward_flops(cfg, batch, seq_len, tgt_len)
    return None if forward is None else 3 * forward


def ffn_matrices(ffn: str) -> int:
    """Weight matrices of one FFN of kind ``ffn``: 3 for SwiGLU (gate, up, down), else 2."""
    return 3 if ffn == "swiglu" else 2


def analytic_breakdown(cfg, batch: int, seq_len: int, tgt_len: int | None = None) -> dict[str, int]:
    """Forward FLOPs of tbench's Transformer by part. ``seq_len``: source length of an encoder-decoder (the target length
    is ``tgt_len``, default ``seq_len``), or the sequence length of a decoder-only LM.

    Keys: ``{encoder,decoder}.self_attn.{proj,scores}``, ``decoder.cross_attn.{proj,scores}``,
    ``{encoder,decoder}.ffn``, ``lm_head``; all present (zero where a part does not exist).
    """
    for name, value in (("batch", batch), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if tgt_len is not None and not cfg.is_encoder_decoder:
        raise ValueError(f"tgt_len is for encoder-decoder models; got tgt_len={tgt_len!r} for a "
                         "decoder-only config")
    S = seq_len
    T = seq_len if tgt_len is None else tgt_len
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"tgt_len must be an integer >= 1; got {tgt_len!r}")
    B, C, F, H, D, V = batch, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.head_dim, cfg.vocab_size
    C_kv = cfg.kv_heads * D  # K and V projections' width (GQA: fewer heads than queries)
    n_enc, n_dec = cfg.n_encoder_layers, cfg.n_decoder_layers
    dec_len = T if cfg.is_encoder_decoder else S

    def linear(tokens: int, n_in: int, n_out: int) -> int:
        return 2 * tokens * n_in * n_out

    def scores(pairs: int, scored: int | None = None) -> int:  # q k^T and p v, every head
        return 2 * (pairs + (pairs if scored is None else scored)) * D * H * B

    def self_scores(S: int, causal: bool) -> int:
        attention = cfg.decoder_attention if causal else cfg.attention
        return (scores(attention.allowed_pairs(S, causal), attention.scored_pairs(S, causal))
                + 2 * attention.projection_products(S) * D * cfg.kv_heads * B)  # per K/V head

    out = {
        "encoder.self_attn.proj": n_enc * 2 * (linear(B * S, C, C) + linear(B * S, C, C_kv)),
        "encoder.self_attn.scores": n_enc * self_scores(S, False),
        "encoder.ffn": n_enc * ffn_matrices(cfg.ffn) * linear(B * S, C, F),
        "decoder.self_attn.proj": n_dec * 2 * (linear(B * dec_len, C, C) + linear(B * dec_len, C, C_kv)),
        "decoder.self_attn.scores": n_dec * self_scores(dec_len, True),
        "decoder.cross_attn.proj": 0,
        "decoder.cross_attn.scores": 0,
        "decoder.ffn": n_dec * ffn_matrices(cfg.ffn) * linear(B * dec_len, C, F),
        "lm_head": linear(B * dec_len, C, V),
    }
    if cfg.is_encoder_decoder:  # q, o on the target; k, v on the memory
        out["decoder.cross_attn.proj"] = n_dec * 2 * (linear(B * T, C, C) + linear(B * S, C, C_kv))
        out["decoder.cross_attn.scores"] = n_dec * scores(T * S)
    return out


def forward_flops(cfg, batch: int, seq_len: int, tgt_len: int | None = None) -> int:
    """FLOPs of one forward pass over ``batch`` sequences (see :func:`flops_breakdown`)."""
    return sum(flops_breakdown(cfg, batch, seq_len, tgt_len).values())


def train_step_flops(cfg, batch: int, seq_len: int, tgt_len: int | None = None) -> int:
    """FLOPs of one training step: forward + backward = 3 x forward."""
    return 3 * forward_flops(cfg, batch, seq_len, tgt_len)


def hardware_train_flops(cfg, batch: int, seq_len: int, memory, tgt_len: int | None = None) -> int:
    """FLOPs one training step executes under activation-checkpointing policy ``memory``
    (``implementations.memory``): the model FLOPs of :func:`train_step_flops` plus the forward
    FLOPs the backward recomputes (``memory.recompute_flops``). MFU divides the model FLOPs,
    hardware FLOPs utilisation (HFU) these."""
    return (train_step_flops(cfg, batch, seq_len, tgt_len)
            + memory.recompute_flops(cfg, flops_breakdown(cfg, batch, seq_len, tgt_len)))



def prefill_flops(cfg, batch: int, seq_len: int) -> int:
    """FLOPs of a prefill (``implementations.generate.prefill``): the prompt's forward pass with
    the LM head on its last position only. Decoder-only: the ``seq_len`` prompt; encoder-decoder:
    the ``seq_len`` source encoded, its cross-attention K/V projected, and the start token."""
    if cfg.is_encoder_decoder:
        return forward_flops(cfg, batch, seq_len, tgt_len=1)
    parts = flops_breakdown(cfg, batch, seq_len)
    parts["lm_head"] //= seq_len  # one position per row
    return sum(parts.values())


def decode_step_flops(cfg, batch: int, context_len: int, src_len: int | None = None) -> int:
    """FLOPs of one cached decode step of model source ``cfg`` (:func:`analytic_decode_step_flops`)."""
    return cfg.decode_step_flops(batch, context_len, src_len)


def analytic_decode_step_flops(cfg, batch: int, context_len: int, src_len: int | None = None) -> int:
    """FLOPs of one cached decode step of tbench's Transformer: one token per row at position
    ``context_len``.

    Every Linear on one token, the LM head on it, and attention over the keys that query may
    attend: ``allowed_pairs(c + 1) - allowed_pairs(c)`` (causal), the pattern's own count, so a
    sparse pattern is charged its allowed keys only. Encoder-decoder: plus cross-attention (q, o
    on the token, scores over ``src_len`` memory keys; the memory's K/V were projected once)."""
    for name, value, low in (("batch", batch, 1), ("context_len", context_len, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    B, C, F, H, D, V = batch, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.head_dim, cfg.vocab_size
    pairs = cfg.decoder_attention.allowed_pairs
    scored = cfg.decoder_attention.scored_pairs
    keys = pairs(context_len + 1, True) - pairs(context_len, True) if context_len else 1
    keys_scored = scored(context_len + 1, True) - scored(context_len, True) if context_len else 1
    C_kv = cfg.kv_heads * D  # GQA: K and V are projected to fewer heads
    layer = (2 * 2 * B * C * (C + C_kv) + ffn_matrices(cfg.ffn) * 2 * B * C * F
             + 2 * B * H * D * (keys + keys_scored))
    if cfg.is_encoder_decoder:
        if src_len is None:
            raise ValueError("an encoder-decoder decode step needs src_len (memory keys)")
        layer += 2 * 2 * B * C * C + 4 * B * H * D * src_len
    return cfg.n_decoder_layers * layer + 2 * B * C * V


def param_count(m: dict, attention=None) -> int:
    """Parameters of tbench's Transformer with fields ``m`` (a preset with its overrides; the LM
    head tied to the embedding), with those its attention pattern owns in each self-attention
    layer (linformer's projections). Biases (``bias``), a SwiGLU FFN's third matrix (``ffn``),
    RMSNorm's missing bias (``norm_type``) and a learned position table (``positions``) count."""
    C, F = m["d_model"], m["d_ff"]
    C_kv = C // m["n_heads"] * (m.get("n_kv_heads") or m["n_heads"])
    bias = m.get("bias", True)
    norm = C * (1 if m.get("norm_type") == "rms" else 2)
    attn = 2 * C * C + 2 * C * C_kv + (2 * C + 2 * C_kv if bias else 0)
    matrices = ffn_matrices(m.get("ffn", "relu"))
    ffn = matrices * C * F + ((matrices - 1) * F + C if bias else 0)
    block = attn + norm + ffn + norm
    cross = attn + norm if m["n_encoder_layers"] else 0
    final = norm * (1 + (m["n_encoder_layers"] > 0)) if m.get("norm") == "pre" else 0
    table = m["max_seq_len"] * C if m.get("positions") == "learned" else 0

    def own(causal: bool) -> int:  # the pattern's parameters in one self-attention layer
        return 0 if attention is None else attention.in_self_attention(causal).param_count(m["max_seq_len"])

    return (m["vocab_size"] * C + table + m["n_encoder_layers"] * (block + own(False))
            + m["n_decoder_layers"] * (block + own(True) + cross) + final)

