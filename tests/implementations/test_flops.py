"""Analytic FLOPs: hand-checked on a small shape and cross-checked with torch's FlopCounterMode.

The counter counts matrix products (mm/addmm/bmm, 2*m*n*k, bias adds ignored) and nothing
elementwise (softmax, LayerNorm, ReLU, masking), which is also what the analytic count covers.
It counts what a kernel *computes*: the eager dense causal attention computes all T*T scores and
masks half, where the analytic count charges only the T(T+1)/2 allowed pairs, so
counted = analytic + 4*B*H*D*(T*T - allowed) per causal layer. (CPU fused SDPA is not counted by
FlopCounterMode at all, so the cross-check uses ops="eager".)
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from implementations import registry
from implementations.flops import flops_breakdown, forward_flops, train_step_flops
from implementations.model import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def config(strategy=None, **overrides):
    attention = registry.create("attention", strategy or {"name": "dense"})
    return ModelConfig.from_preset("tiny", ops="eager", attention=attention, **overrides)


def counted(cfg, B, S, T=None, backward=False):
    """(total, per-module) FLOPs that FlopCounterMode sees for one forward (+ backward)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    gen = torch.Generator().manual_seed(0)
    args = [torch.randint(3, cfg.vocab_size, (B, S), generator=gen)]
    if cfg.is_encoder_decoder:
        args.append(torch.randint(3, cfg.vocab_size, (B, T), generator=gen))
    with FlopCounterMode(display=False) as counter:
        out = model(*args)
        if backward:
            out.sum().backward()
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


def causal_waste(cfg, B, T):
    """Scores the eager dense causal kernel computes but the analytic count does not charge."""
    return 4 * B * cfg.n_heads * cfg.head_dim * cfg.n_decoder_layers * (
        T * T - cfg.attention.allowed_pairs(T, True))


def test_hand_computed_decoder_only():
    cfg = ModelConfig(vocab_size=10, d_model=8, n_heads=2, d_ff=16, n_encoder_layers=0,
                      n_decoder_layers=1, max_seq_len=16)
    got = flops_breakdown(cfg, batch=1, seq_len=4)
    assert got["decoder.self_attn.proj"] == 4 * 2 * 4 * 8 * 8  # 4 Linears over 4 tokens: 2048
    assert got["decoder.self_attn.scores"] == 4 * 10 * 4 * 2  # 10 causal pairs, D=4, H=2: 320
    assert got["decoder.ffn"] == 2 * 2 * 4 * 8 * 16  # 2048
    assert got["lm_head"] == 2 * 4 * 8 * 10  # 640
    assert got["encoder.ffn"] == got["decoder.cross_attn.scores"] == 0
    assert forward_flops(cfg, 1, 4) == 5056 and train_step_flops(cfg, 1, 4) == 3 * 5056
    assert forward_flops(cfg, 3, 4) == 3 * 5056  # linear in batch


@pytest.mark.parametrize("n_encoder_layers", [2, 0])
def test_dense_eager_matches_flop_counter_exactly(n_encoder_layers):
    cfg = config(n_encoder_layers=n_encoder_layers, norm="pre", positions="rope")
    B, S, T = 2, 16, 12
    tgt_len = T if n_encoder_layers else None
    dec_len = T if n_encoder_layers else S
    total, _ = counted(cfg, B, S, T)
    assert total == forward_flops(cfg, B, S, tgt_len) + causal_waste(cfg, B, dec_len)
    train_total, _ = counted(cfg, B, S, T, backward=True)  # backward: 2 products per product
    assert train_total == train_step_flops(cfg, B, S, tgt_len) + 3 * causal_waste(cfg, B, dec_len)


SPARSE = [{"name": "block", "block_size": 5}, {"name": "local", "window": 3},
          {"name": "atrous", "dilation": 3}, {"name": "atrous", "dilation": 2, "window": 4}]


@pytest.mark.parametrize("strategy", SPARSE, ids=lambda s: registry.create("attention", s).label)
@pytest.mark.parametrize("n_encoder_layers", [2, 0])
def test_sparse_is_charged_only_its_pairs(strategy, n_encoder_layers):
    cfg = config(strategy, n_encoder_layers=n_encoder_layers)
    B, S, T = 2, 23, 17  # divisible by neither block size nor dilation
    tgt_len = T if n_encoder_layers else None
    analytic = flops_breakdown(cfg, B, S, tgt_len)
    dense = flops_breakdown(config(n_encoder_layers=n_encoder_layers), B, S, tgt_len)
    total, _ = counted(cfg, B, S, T)
    assert sum(analytic.values()) <= total  # the kernel computes candidates >= allowed pairs
    assert analytic["decoder.self_attn.scores"] < dense["decoder.self_attn.scores"]
    assert analytic["encoder.self_attn.scores"] <= dense["encoder.self_attn.scores"]
    for key in ("decoder.self_attn.proj", "decoder.ffn", "lm_head", "decoder.cross_attn.scores"):
        assert analytic[key] == dense[key]  # only self-attention scores depend on the strategy


def test_block_noncausal_divisible_matches_flop_counter_exactly():
    cfg = config({"name": "block", "block_size": 4})
    B, S, T = 2, 16, 12  # S divisible by b: the encoder computes exactly its 4 x 4 blocks
    analytic = flops_breakdown(cfg, B, S, T)
    total, per_module = counted(cfg, B, S, T)
    encoder_attn = sum(per_module[f"EncoderDecoder.encoder.{i}.self_attn"]
                       for i in range(cfg.n_encoder_layers))
    assert encoder_attn == analytic["encoder.self_attn.proj"] + analytic["encoder.self_attn.scores"]
    assert analytic["encoder.self_attn.scores"] == cfg.n_encoder_layers * 4 * (S * 4) * 16 * 4 * B
    assert sum(analytic.values()) <= total


def test_bad_arguments():
    with pytest.raises(ValueError, match="tgt_len"):
        forward_flops(config(n_encoder_layers=0), 1, 8, tgt_len=4)
    with pytest.raises(ValueError, match="batch"):
        forward_flops(config(), 0, 8)
    with pytest.raises(ValueError, match="seq_len"):
        forward_flops(config(), 1, 2.5)


def matrix_parameters(model) -> int:
    """N of the published convention: the weights of every matrix product (the tied LM head
    once), no biases, norms or position tables."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("strategy", [{"name": "dense"}, {"name": "local", "window": 4},
                                      {"name": "block", "block_size": 4}])
def test_the_published_convention_is_6n_plus_12lhqt_per_trained_token(strategy):
    """PaLM appendix B / nanoGPT: 6N + 12 L H Q T per token, every pattern charged S^2 pairs."""
    from implementations.flops import palm_forward_flops, palm_train_step_flops

    cfg = config(strategy, n_encoder_layers=0)
    B, S = 2, 16
    N = matrix_parameters(build_model(cfg))
    L, H, Q = cfg.n_decoder_layers, cfg.n_heads, cfg.head_dim
    assert palm_train_step_flops(cfg, B, S) == B * S * (6 * N + 12 * L * H * Q * S)
    assert palm_forward_flops(cfg, B, S) == B * S * (2 * N + 4 * L * H * Q * S)
    assert palm_forward_flops(cfg, B, S) > forward_flops(cfg, B, S)  # causal: S(S+1)/2 < S^2


@pytest.mark.parametrize("preset, S, below", [("gpt-125m", 1024, 0.07), ("llama-1b", 8192, 0.15)])
def test_tbench_mfu_is_below_the_published_convention_by_the_causal_half(preset, S, below):
    from implementations.flops import palm_train_step_flops

    cfg = ModelConfig.from_preset(preset, max_seq_len=S)
    ours, palm = train_step_flops(cfg, 1, S), palm_train_step_flops(cfg, 1, S)
    assert 1 - ours / palm == pytest.approx(below, abs=0.01)
