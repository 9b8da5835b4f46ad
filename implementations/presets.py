"""Named model shapes: plain dicts of :class:`implementations.model.ModelConfig` fields.

``ModelConfig.from_preset(name, **overrides)`` turns one into a validated config; the attention
strategy is not part of a preset (it is a strategy axis of its own; the default is dense).

    tiny      encoder-decoder, fast CPU tests                     ~0.2M parameters
    base      the original Transformer base (Vaswani et al.)      ~60M  (shared 32k vocabulary)
    gpt-125m  decoder-only, GPT-3 Small: GPT-2's architecture     125,226,240
    gpt-350m  decoder-only, GPT-3 Medium                          ~355M
    gpt-1.3b  decoder-only, GPT-3 XL shape (16 heads of 128)      ~1.31B
    llama-1b  decoder-only, Llama 3.2 1B                          1,235,814,400

The GPT presets have GPT-2's architecture (Radford et al. 2019; GPT-3 keeps it): a learned
position table, pre-norm LayerNorm, a GELU FFN (tanh approximation), biases in every Linear, the
LM head tied to the unscaled token embedding. At 1,024 positions gpt-125m is GPT-2 small
(124,439,808 parameters); its table holds GPT-3's 2,048. GPT-3's alternating locally banded
sparse layers are not copied: that is an attention strategy here. ``llama-1b`` is Llama 3.2 1B:
RMSNorm, a SwiGLU FFN (gate, up, down), no biases, RoPE with base 500,000, GQA (32 query, 8
key/value heads), the LM head tied to the embedding; its published 131,072 positions are cut to
8,192 here and Llama 3's RoPE frequency scaling is left out (neither changes a parameter or a
FLOP). ``PUBLISHED`` states the published parameter counts that ``tbench list`` shows beside
the preset's own.
"""
from __future__ import annotations

_GPT = dict(  # GPT-2 / GPT-3's architecture
    vocab_size=50257, n_encoder_layers=0, max_seq_len=2048, dropout=0.0, norm="pre",
    positions="learned", ffn="gelu", scale_embedding=False,
    pad_id=50256, bos_id=50256, eos_id=50256,  # GPT-2's <|endoftext|>
)

PRESETS: dict[str, dict] = {
    "tiny": dict(
        vocab_size=256, d_model=64, n_heads=4, d_ff=128, n_encoder_layers=2, n_decoder_layers=2,
        max_seq_len=256, dropout=0.0, norm="post", positions="sinusoidal",
        pad_id=0, bos_id=1, eos_id=2,
    ),
    "base": dict(
        vocab_size=32000, d_model=512, n_heads=8, d_ff=2048, n_encoder_layers=6,
        n_decoder_layers=6, max_seq_len=1024, dropout=0.1, norm="post", positions="sinusoidal",
        pad_id=0, bos_id=1, eos_id=2,
    ),
    "gpt-125m": dict(_GPT, d_model=768, n_heads=12, d_ff=3072, n_decoder_layers=12),
    "gpt-350m": dict(_GPT, d_model=1024, n_heads=16, d_ff=4096, n_decoder_layers=24),
    "gpt-1.3b": dict(_GPT, d_model=2048, n_heads=16, d_ff=8192, n_decoder_layers=24),
    "llama-1b": dict(  # Llama 3.2 1B (config.json of meta-llama/Llama-3.2-1B)
        vocab_size=128256, d_model=2048, n_heads=32, n_kv_heads=8, d_ff=8192, n_encoder_layers=0,
        n_decoder_layers=16, max_seq_len=8192, dropout=0.0, norm="pre", positions="rope",
        ffn="swiglu", norm_type="rms", bias=False, scale_embedding=False, rope_theta=500000.0,
        pad_id=128004, bos_id=128000, eos_id=128001),
}

# preset -> (the published model, its parameter count, what differs from the preset's own count)
PUBLISHED: dict[str, tuple[str, int, str]] = {
    "gpt-125m": ("GPT-2 small", 124_439_808, "at 1,024 positions (max_seq_len: 1024)"),
    "gpt-350m": ("GPT-2 medium", 354_823_168, "at 1,024 positions (max_seq_len: 1024)"),
    "llama-1b": ("Llama 3.2 1B", 1_235_814_400, ""),
}
