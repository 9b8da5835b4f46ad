"""Named model shapes: plain dicts of :class:`implementations.model.ModelConfig` fields.

``ModelConfig.from_preset(name, **overrides)`` turns one into a validated config; the attention
strategy is not part of a preset (it is a strategy axis of its own; the default is dense).

    tiny      encoder-decoder, fast CPU tests                     ~0.2M parameters
    base      the original Transformer base (Vaswani et al.)      ~60M  (shared 32k vocabulary)
    gpt-125m  decoder-only, GPT-2 small / GPT-3 Small shape        ~124M
    gpt-350m  decoder-only, GPT-2 medium / GPT-3 Medium shape      ~354M
    gpt-1.3b  decoder-only, GPT-3 XL shape                         ~1.31B
    llama-1b  decoder-only, Llama 3.2 1B shape: GQA, 32 query and  ~0.97B (Llama's SwiGLU FFN
              8 key/value heads, 128k vocabulary                    has a third matrix: 1.24B)
Parameter counts are with the embedding tied to the LM head and no learned position table.
"""
from __future__ import annotations

_GPT = dict(
    vocab_size=50257, n_encoder_layers=0, max_seq_len=2048, dropout=0.0, norm="pre",
    positions="rope", pad_id=50256, bos_id=50256, eos_id=50256,  # GPT-2's <|endoftext|>
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
    "llama-1b": dict(  # Llama 3.2 1B's shape; its FFN here is the model's GELU MLP, not SwiGLU
        vocab_size=128256, d_model=2048, n_heads=32, n_kv_heads=8, d_ff=8192, n_encoder_layers=0,
        n_decoder_layers=16, max_seq_len=8192, dropout=0.0, norm="pre", positions="rope",
        pad_id=128004, bos_id=128000, eos_id=128001),
}
