"""Model tests: config validation, shapes, masking, packing, eager vs fused, loss, presets."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from implementations import registry
from implementations.model import DecoderOnly, EncoderDecoder, ModelConfig, build_model
from implementations.presets import PRESETS

pytestmark = pytest.mark.usefixtures("one_thread")

STRATEGIES = [{"name": "dense"}, {"name": "local", "window": 2}]


def make(strategy=None, **overrides):
    torch.manual_seed(0)
    attention = registry.create("attention", strategy or {"name": "dense"})
    model = build_model(ModelConfig.from_preset("tiny", attention=attention, **overrides))
    return model.eval()


def tokens(B, S, seed=1):
    return torch.randint(3, 256, (B, S), generator=torch.Generator().manual_seed(seed))


# --- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, field", [
    (dict(d_model=66), "d_model"),  # not divisible by 4 heads
    (dict(n_heads=0), "n_heads"),
    (dict(vocab_size=-1), "vocab_size"),
    (dict(d_ff=12.5), "d_ff"),
    (dict(n_decoder_layers=0), "n_decoder_layers"),
    (dict(n_encoder_layers=-1), "n_encoder_layers"),
    (dict(max_seq_len=True), "max_seq_len"),
    (dict(dropout=1.0), "dropout"),
    (dict(norm="sandwich"), "norm"),
    (dict(positions="alibi"), "positions"),
    (dict(ops="triton"), "ops"),
    (dict(eos_id=256), "eos_id"),
    (dict(pad_id=-1), "pad_id"),
    (dict(d_model=72, n_heads=8), "rope"),  # head dim 9 is odd
    (dict(attention="dense"), "attention"),
])
def test_bad_config_names_field_and_value(overrides, field):
    if field == "rope":
        overrides = dict(overrides, positions="rope")
    with pytest.raises(ValueError, match=field) as info:
        ModelConfig.from_preset("tiny", **overrides)
    given = next(iter(overrides.values()))
    assert repr(given) in str(info.value) or str(given) in str(info.value)


def test_unknown_field_and_preset_suggest_near_match():
    with pytest.raises(ValueError, match=r"no field 'd_modle' \(did you mean 'd_model'\?\)"):
        ModelConfig.from_preset("tiny", d_modle=64)
    with pytest.raises(ValueError, match=r"'gpt-125' \(did you mean 'gpt-125m'\?\)"):
        ModelConfig.from_preset("gpt-125")


def test_config_is_frozen_and_replace_revalidates():
    cfg = ModelConfig.from_preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 32
    with pytest.raises(ValueError, match="n_heads"):
        dataclasses.replace(cfg, n_heads=3)
    assert cfg.attention.label == "dense" and cfg.head_dim == 16


# --- shapes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("positions", ["sinusoidal", "rope"])
def test_shapes_both_kinds(norm, positions):
    ed = make(norm=norm, positions=positions)
    assert isinstance(ed, EncoderDecoder)
    assert ed(tokens(2, 9), tokens(2, 5)).shape == (2, 5, 256)
    lm = make(norm=norm, positions=positions, n_encoder_layers=0)
    assert isinstance(lm, DecoderOnly) and not hasattr(lm, "encoder")
    assert lm(tokens(3, 7)).shape == (3, 7, 256)


def test_sequence_longer_than_max_seq_len_is_rejected():
    with pytest.raises(ValueError, match="max_seq_len"):
        make(max_seq_len=8, n_encoder_layers=0)(tokens(1, 9))


# --- masking ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s["name"])
@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("positions", ["sinusoidal", "rope"])
def test_encoder_decoder_padding_does_not_change_real_positions(strategy, norm, positions):
    model = make(strategy, norm=norm, positions=positions)
    src, tgt = tokens(2, 10, seed=2), tokens(2, 8, seed=3)  # padding holds random (real-looking) ids
    src_mask = torch.arange(10) < torch.tensor([[6], [10]])  # row 0: 6 real source tokens
    tgt_mask = torch.arange(8) < torch.tensor([[5], [8]])  # row 0: 5 real target tokens
    with torch.no_grad():
        padded = model(src, tgt, src_mask, tgt_mask)
        alone = model(src[:1, :6], tgt[:1, :5])
        unmasked = model(src, tgt)
    torch.testing.assert_close(padded[0, :5], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked[0, :5], alone[0], atol=1e-3)  # the mask is what matters


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s["name"])
@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("positions", ["sinusoidal", "rope"])
def test_decoder_only_left_padding_does_not_change_real_positions(strategy, norm, positions):
    model = make(strategy, norm=norm, positions=positions, n_encoder_layers=0)
    seq = tokens(2, 9, seed=4)
    mask = torch.arange(9) >= torch.tensor([[3], [0]])  # row 0: 3 left pads, then 6 real tokens
    position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)  # real tokens start at 0
    with torch.no_grad():
        padded = model(seq, key_padding_mask=mask, position_ids=position_ids)
        alone = model(seq[:1, 3:])
        unmasked = model(seq, position_ids=position_ids)
    torch.testing.assert_close(padded[0, 3:], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked[0, 3:], alone[0], atol=1e-3)


@pytest.mark.parametrize("positions", ["sinusoidal", "rope"])
def test_packed_segments_equal_separate_sequences(positions):
    model = make({"name": "local", "window": 3}, norm="pre", positions=positions, n_encoder_layers=0)
    a, b = tokens(1, 5, seed=5), tokens(1, 7, seed=6)
    packed = torch.cat([a, b], dim=1)  # (1, 12)
    segment_ids = torch.tensor([[0] * 5 + [1] * 7])
    position_ids = torch.tensor([list(range(5)) + list(range(7))])
    with torch.no_grad():
        out = model(packed, segment_ids=segment_ids, position_ids=position_ids)
        torch.testing.assert_close(out[:, :5], model(a), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[:, 5:], model(b), atol=1e-5, rtol=1e-5)


# --- eager vs fused --------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES + [{"name": "block", "block_size": 3}],
                         ids=lambda s: s["name"])
@pytest.mark.parametrize("n_encoder_layers", [2, 0])
def test_eager_and_fused_agree(strategy, n_encoder_layers):
    eager = make(strategy, ops="eager", norm="pre", positions="rope", n_encoder_layers=n_encoder_layers)
    fused = make(strategy, ops="fused", norm="pre", positions="rope", n_encoder_layers=n_encoder_layers)
    fused.load_state_dict(eager.state_dict())  # same parameters, different kernels
    src, tgt = tokens(2, 10, seed=7), tokens(2, 10, seed=8)
    mask = torch.arange(10) < torch.tensor([[7], [10]])
    targets = tgt.roll(-1, dims=1).masked_fill(~mask, -100)
    results = []
    for model in (eager, fused):
        model.zero_grad()
        args = (src, tgt, mask, mask) if n_encoder_layers else (tgt, mask)
        logits = model(*args)
        model.loss(logits, targets).backward()
        results.append((logits, model.decoder[0].self_attn.W_q.weight.grad))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-4)
    assert eager.decoder[0].norm1.ops == "eager" and fused.decoder[0].norm1.ops == "fused"


# --- loss ------------------------------------------------------------------------------------
def test_loss_is_mean_over_real_targets():
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[1, 2, -100, -100], [3, -100, 4, 5]])
    logp = logits.log_softmax(-1)
    real = [(b, s) for b in range(2) for s in range(4) if targets[b, s] != -100]
    expected = -sum(logp[b, s, targets[b, s]] for b, s in real) / len(real)
    got = EncoderDecoder.loss(logits, targets)
    torch.testing.assert_close(got, expected)
    logits[0, 2] += 100.0  # an ignored position cannot change the loss
    torch.testing.assert_close(EncoderDecoder.loss(logits, targets), expected)


# --- presets ---------------------------------------------------------------------------------
def expected_params(p: dict) -> int:
    """Hand count: tied embedding; Linear = weight + bias (none without ``bias``); LayerNorm = 2C,
    RMSNorm = C; SwiGLU has three FFN matrices; a learned position table max_seq_len x C."""
    C, F, V = p["d_model"], p["d_ff"], p["vocab_size"]
    n_enc, n_dec = p["n_encoder_layers"], p["n_decoder_layers"]
    C_kv = C // p["n_heads"] * p.get("n_kv_heads", p["n_heads"])  # K and V widths (GQA)
    b = 1 if p.get("bias", True) else 0
    norm = C if p.get("norm_type") == "rms" else 2 * C
    attn = 2 * (C * C + b * C) + 2 * (C * C_kv + b * C_kv)
    ffn = (C * F + b * F) + (F * C + b * C) + ((C * F + b * F) if p.get("ffn") == "swiglu" else 0)
    enc_layer = attn + ffn + 2 * norm
    dec_layer = (2 * attn + ffn + 3 * norm) if n_enc else (attn + ffn + 2 * norm)
    final_norms = norm * ((n_enc > 0) + 1) if p["norm"] == "pre" else 0
    table = p["max_seq_len"] * C if p.get("positions") == "learned" else 0
    return V * C + table + n_enc * enc_layer + n_dec * dec_layer + final_norms


PUBLISHED = {"gpt-125m": 125_226_240, "llama-1b": 1_235_814_400}  # GPT-3 Small (2,048 positions), Llama 3.2 1B


@pytest.mark.parametrize("name, approx", [("tiny", None), ("base", 60e6), ("gpt-125m", 125e6),
                                          ("gpt-350m", 350e6), ("gpt-1.3b", 1.3e9),
                                          ("llama-1b", 1.24e9)])
def test_preset_parameter_counts(name, approx):
    with torch.device("meta"):  # shapes only, nothing allocated
        model = build_model(ModelConfig.from_preset(name))
    n = sum(p.numel() for p in model.parameters())
    assert n == expected_params(PRESETS[name])
    if approx:
        assert abs(n - approx) / approx < 0.06, n
    if name in PUBLISHED:
        assert n == PUBLISHED[name]
    assert isinstance(model, DecoderOnly) == (name.startswith("gpt") or name.startswith("llama"))


def test_gpt_small_at_1024_positions_is_gpt2_small():
    with torch.device("meta"):
        model = build_model(ModelConfig.from_preset("gpt-125m", max_seq_len=1024))
    assert sum(p.numel() for p in model.parameters()) == 124_439_808  # GPT-2 small, tied


def test_preset_overrides_apply_and_presets_validate():
    for name in PRESETS:
        ModelConfig.from_preset(name)
    cfg = ModelConfig.from_preset("base", norm="pre", dropout=0.0)
    assert (cfg.norm, cfg.dropout, cfg.d_model, cfg.n_encoder_layers) == ("pre", 0.0, 512, 6)
