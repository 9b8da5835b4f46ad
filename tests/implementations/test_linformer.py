"""Linformer, what the registry's contract tests cannot say: its parameters in the model, its
FLOPs against torch's counter, padding semantics, GQA, memory O(S * k), and where it cannot run.

(Outputs and gradients against a float64 reference, q, k, v and E, F, with padding, both ops
and every CPU SDPA backend: ``test_attention_registry.py``.)"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from test_flops import causal_waste, counted
from test_gqa import as_mha

from harness.measure import memory_model as mm
from implementations import registry
from implementations.attention.grid import KernelNotSupported
from implementations.flops import flops_breakdown, forward_flops, train_step_flops
from implementations.model import ModelConfig, build_model
from implementations.presets import PRESETS
from implementations.registry import Context

pytestmark = pytest.mark.usefixtures("one_thread")


def linformer(**params):
    return registry.create("attention", {"name": "linformer", "k": 8, **params})


def config(strategy=None, **overrides):
    return ModelConfig.from_preset("tiny", attention=strategy or linformer(),
                                   **{"ops": "eager", **overrides})


@pytest.mark.parametrize("share_kv", [False, True], ids=["E_F", "shared"])
def test_parameters_are_the_encoders_and_counted(share_kv):
    """E and F (k x max_len) in each encoder layer's self-attention, none in the decoder (dense,
    causal); the memory model's count equals the model's."""
    s = linformer(share_kv=share_kv)
    model = build_model(config(s))
    owned = {n: p.shape for n, p in model.named_parameters() if ".pattern." in n}
    names = {f"encoder.{i}.self_attn.pattern.{m}" for i in range(2)
             for m in (("E",) if share_kv else ("E", "F"))}
    assert set(owned) == names and set(owned.values()) == {(8, 256)}
    assert model.cfg.decoder_attention.name == "dense"
    m = {**PRESETS["tiny"]}
    assert mm.param_count(m, s) == sum(p.numel() for p in model.parameters())
    assert mm.param_count(m, s) - mm.param_count(m) == 2 * 8 * 256 * (1 if share_kv else 2)


def test_flops_equal_torchs_counter_exactly():
    """The encoder's projections (2 k S D per K/V head, each) and its S x k pairs, the decoder
    dense and causal: FlopCounterMode sees exactly the analytic count plus the causal waste of
    the eager dense decoder, forward and backward."""
    cfg = config()
    B, S, T = 2, 20, 12
    total, _ = counted(cfg, B, S, T)
    assert total == forward_flops(cfg, B, S, T) + causal_waste(
        dataclasses.replace(cfg, attention=cfg.decoder_attention), B, T)
    train_total, _ = counted(cfg, B, S, T, backward=True)
    assert train_total == train_step_flops(cfg, B, S, T) + 3 * causal_waste(
        dataclasses.replace(cfg, attention=cfg.decoder_attention), B, T)
    parts = flops_breakdown(cfg, B, S, T)
    D, H = cfg.head_dim, cfg.n_heads
    assert parts["encoder.self_attn.scores"] == 2 * (4 * S * 8 * D * H * B + 4 * 8 * S * D * H * B)


def test_flops_grow_linearly_in_s_and_stay_below_dense():
    a, b = (flops_breakdown(config(max_seq_len=8192), 1, S, 1)["encoder.self_attn.scores"]
            for S in (2048, 4096))
    assert b == 2 * a
    dense = flops_breakdown(config(registry.create("attention", "dense")), 1, 4096, 1)
    assert b < dense["encoder.self_attn.scores"] / 100


def test_right_padding_equals_the_sequence_alone():
    """Padded keys and values are zeroed before the projection: a right-padded row gives
    exactly what its real tokens give alone; a row with no real key gives zeros."""
    torch.manual_seed(0)
    s = linformer()
    weights = s.make_weights(32).double()
    q, k, v = (torch.randn(3, 2, 20, 4, dtype=torch.float64) for _ in range(3))
    kpm = torch.arange(20) < torch.tensor([[20], [13], [0]])
    out = s.attend(q, k, v, causal=False, key_padding_mask=kpm, ops="eager", weights=weights)
    alone = s.attend(q[1:2], k[1:2, :, :13], v[1:2, :, :13], causal=False, ops="fused",
                     weights=weights)
    torch.testing.assert_close(out[1:2], alone, rtol=1e-12, atol=1e-12)
    assert torch.equal(out[2], torch.zeros_like(out[2]))


@pytest.mark.parametrize("ops", ["eager", "fused"])
def test_mqa_equals_mha_with_repeated_kv_heads(ops):
    torch.manual_seed(0)
    model = build_model(config(n_kv_heads=1, ops=ops)).to(torch.float64)
    mha = as_mha(model)
    src, tgt = torch.randint(3, 256, (2, 30)), torch.randint(3, 256, (2, 9))
    src_mask = torch.arange(30) < torch.tensor([[30], [17]])
    torch.testing.assert_close(model(src, tgt, src_key_padding_mask=src_mask),
                               mha(src, tgt, src_key_padding_mask=src_mask))


def test_memory_is_s_times_k_no_s_by_s_tensor():
    """No tensor of the forward or backward holds S x S elements: the largest is S x D or k x S."""
    from test_attention import largest_tensor

    S, s = 512, linformer(k=16)
    weights = s.make_weights(S)
    q = torch.randn(1, 1, S, 4, requires_grad=True)
    most = largest_tensor(lambda: s.attend(q, q, q, causal=False, ops="eager",
                                           weights=weights).sum().backward())
    assert most <= S * 16


def test_a_decoder_only_model_refuses_it_with_the_reason():
    """Causal self-attention has no linformer: a decoder-only point is not_supported before any
    worker starts, the model refuses the config, attend refuses a causal call; an encoder point
    runs. Any kernel but auto is refused too."""
    s = linformer()
    (reason,) = s.not_supported_reasons(Context(decoder_only=True))
    assert "not causal" in reason and "encoder-decoder" in reason
    assert s.not_supported_reasons(Context(decoder_only=False)) == []
    with pytest.raises(ValueError, match="no causal form"):
        config(n_encoder_layers=0)
    q = torch.randn(1, 2, 6, 4)
    with pytest.raises(KernelNotSupported, match="not causal"):
        s.attend(q, q, q, causal=True, weights=s.make_weights(6))
    with pytest.raises(ValueError, match="pass weights"):
        s.attend(q, q, q, causal=False)
    for kernel in ("mask", "flex", "flash_attn"):
        reasons = linformer(kernel=kernel).not_supported_reasons(Context())
        assert len(reasons) == 1 and f"no rule for the {kernel} kernel" in reasons[0]


def test_a_sweep_records_the_decoder_only_point_not_supported(tmp_path):
    from harness.measure.workload import unsupported_reasons
    from harness.suite.sweep import load_points

    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ndevice: cpu\nmodel: {preset: tiny}\n"
                     "strategies: {attention: {name: linformer, k: 8}}\n"
                     "sweep: {grid: {model.n_encoder_layers: [0, 2]}}\n")
    _, (decoder_only, encoder) = load_points(suite, "cpu")
    (reason,) = unsupported_reasons(decoder_only)
    assert reason.startswith("attention linformer_k8: linformer mixes every position")
    assert unsupported_reasons(encoder) == []
