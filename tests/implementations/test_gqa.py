"""Grouped-query attention (``ModelConfig.n_kv_heads``): fewer K/V heads than query heads.

A GQA model is checked against the MHA model it is a special case of: an MHA model whose K/V
projections repeat each K/V head for its group of query heads computes exactly the same thing
(fp64, every attention pattern, eager and fused, encoder-decoder and decoder-only). Beside that:
the KV cache and the K/V projections are ``n_kv_heads`` wide (bytes by hand), cached decoding
equals uncached, FLOPs equal what ``FlopCounterMode`` counts, the memory model's parameter
count equals the model's, and a bad ``n_kv_heads`` is one line naming what is allowed.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.measure import memory_model as mm
from harness.run import lifecycle
from harness.run.plan import points_plan
from harness.suite.errors import SuiteError
from harness.suite.loader import parse_suite
from implementations import registry
from implementations.flops import decode_step_flops, forward_flops
from implementations.generate import decode_step, generate, prefill
from implementations.model import ModelConfig, build_model
from implementations.presets import PRESETS

pytestmark = pytest.mark.usefixtures("one_thread")

PATTERNS = [{"name": "dense"}, {"name": "local", "window": 3}, {"name": "block", "block_size": 4},
            {"name": "atrous", "dilation": 2, "window": 5}]
IDS = [registry.create("attention", p).label for p in PATTERNS]


def config(strategy, n_kv_heads, n_encoder_layers=0, ops="eager", **overrides):
    return ModelConfig.from_preset("tiny", attention=registry.create("attention", strategy),
                                   n_encoder_layers=n_encoder_layers, ops=ops, positions="rope",
                                   norm="pre", n_kv_heads=n_kv_heads, **overrides)


def as_mha(gqa_model):
    """The MHA model that computes what ``gqa_model`` computes: every K/V head's rows of W_k /
    W_v (and bias) repeated for each query head of its group."""
    cfg = dataclasses.replace(gqa_model.cfg, n_kv_heads=None)
    mha = build_model(cfg).to(torch.float64)
    group, D = cfg.n_heads // gqa_model.cfg.kv_heads, cfg.head_dim
    state = {}
    for name, t in gqa_model.state_dict().items():
        if any(f"{w}." in name for w in ("W_k", "W_v")):
            heads = t.reshape(-1, D, *t.shape[1:])  # (H_kv, D, ...)
            t = heads.repeat_interleave(group, dim=0).reshape(-1, *t.shape[1:])
        state[name] = t
    mha.load_state_dict(state)
    return mha


@pytest.mark.parametrize("strategy", PATTERNS, ids=IDS)
@pytest.mark.parametrize("ops", ["eager", "fused"])
@pytest.mark.parametrize("n_kv_heads, n_encoder_layers", [(2, 0), (1, 2)], ids=["gqa2-dec", "mqa-encdec"])
def test_gqa_equals_mha_with_repeated_kv_heads(strategy, ops, n_kv_heads, n_encoder_layers):
    torch.manual_seed(0)
    model = build_model(config(strategy, n_kv_heads, n_encoder_layers, ops)).to(torch.float64)
    assert model.cfg.n_heads == 4 and model.cfg.kv_heads == n_kv_heads
    for name, p in model.named_parameters():  # K/V projections are H_kv heads wide
        if name.endswith(("W_k.weight", "W_v.weight")):
            assert p.shape == (n_kv_heads * model.cfg.head_dim, model.cfg.d_model), name
    mha = as_mha(model)
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(3, 256, (2, 13), generator=gen)
    args = (src, torch.randint(3, 256, (2, 11), generator=gen)) if n_encoder_layers else (src,)
    out = model(*args)
    torch.testing.assert_close(out, mha(*args), rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out.square().sum(), [model.tok.weight])
    mha_grads = torch.autograd.grad(mha(*args).square().sum(), [mha.tok.weight])
    torch.testing.assert_close(grads[0], mha_grads[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("strategy", PATTERNS, ids=IDS)
def test_cached_decode_equals_uncached_and_the_cache_is_kv_heads_wide(strategy):
    torch.manual_seed(0)
    model = build_model(config(strategy, 2, ops="fused")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # larger weights: a non-trivial greedy decode
            if p.dim() == 2 and name != "tok.weight":
                p.normal_(std=0.6)
    prompt = torch.randint(3, 256, (2, 6), generator=torch.Generator().manual_seed(2))
    cached = generate(model, prompt, 20, use_cache=True)
    assert torch.equal(cached, generate(model, prompt, 20, use_cache=False))
    assert len(set(cached.flatten().tolist())) >= 6
    with torch.no_grad():
        _, state = prefill(model, prompt, 27)
    policy = state.cache[0].policy
    for c in state.cache:  # (B, H_kv, slots, D): half the bytes of MHA's (B, H, slots, D)
        assert c.k.shape == c.v.shape == (2, 2, policy.slots(27), 16)
    analytic = policy.cache_bytes(2, model.cfg.kv_heads, 16, 27, len(state.cache), 4)
    assert analytic == sum(t.nbytes for c in state.cache for t in (c.k, c.v))


@pytest.mark.parametrize("n_encoder_layers", [0, 2])
def test_flops_count_the_narrower_kv_projections(n_encoder_layers):
    """What ``FlopCounterMode`` sees GQA save against MHA equals what the analytic count says it
    saves: the K and V projections, ``H - H_kv`` heads narrower, in every attention layer
    (attention itself, and the kernel's waste on masked pairs, are the same in both)."""
    B, S = 2, 12
    gqa = config({"name": "dense"}, 1, n_encoder_layers)
    mha = dataclasses.replace(gqa, n_kv_heads=None)
    tgt = S if n_encoder_layers else None

    def counted(cfg):
        torch.manual_seed(0)
        model = build_model(cfg)
        src = torch.randint(3, 256, (B, S))
        with FlopCounterMode(display=False) as counter:
            model(*((src, torch.randint(3, 256, (B, S))) if n_encoder_layers else (src,)))
        return counter.get_total_flops()

    C, C_kv = gqa.d_model, gqa.kv_heads * gqa.head_dim
    layers = gqa.n_encoder_layers + gqa.n_decoder_layers * (2 if n_encoder_layers else 1)
    saved = layers * 2 * (2 * B * S * C * (C - C_kv))  # K and V, every attention layer
    assert forward_flops(mha, B, S, tgt) - forward_flops(gqa, B, S, tgt) == saved
    assert counted(mha) - counted(gqa) == saved


def test_decode_step_flops_equal_what_the_step_computes():
    model = build_model(config({"name": "local", "window": 3}, 2, ops="eager")).eval()
    prompt = torch.randint(3, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, state = prefill(model, prompt, 12)
        with FlopCounterMode(display=False) as counter:
            decode_step(model, logits.argmax(-1), state)
    assert counter.get_total_flops() == decode_step_flops(model.cfg, 2, 9)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_memory_model_counts_the_narrower_projections(n_kv_heads):
    data = {**PRESETS["tiny"], "n_kv_heads": n_kv_heads}
    with torch.device("meta"):
        model = build_model(ModelConfig.from_preset("tiny", n_kv_heads=n_kv_heads))
    assert mm.param_count(data) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("bad, allowed", [(3, "dividing n_heads=4"), (0, "dividing n_heads=4"),
                                          (8, "dividing n_heads=4"), (True, "allowed: integer or null")])
def test_a_bad_n_kv_heads_is_one_line(bad, allowed):
    suite = {"name": "x", "model": {"preset": "tiny", "overrides": {"n_kv_heads": bad}},
             "workload": {"kind": "forward", "batch_size": 1, "seq_len": 8}}
    with pytest.raises(SuiteError) as err:
        parse_suite(suite, "x")
    (line,) = err.value.lines
    assert "model.overrides.n_kv_heads" in line and allowed in line


def test_a_decode_point_measures_a_kv_heads_wide_cache(tmp_path):
    """Through a real worker: a decode point with 2 K/V heads holds, and reads, half the KV
    bytes of its MHA twin, measured and analytic equal to the count by hand."""
    from harness import records
    from harness.suite.sweep import expand

    points = expand(parse_suite({
        "name": "gqa-decode", "model": {"preset": "tiny", "overrides": {
            "n_encoder_layers": 0, "positions": "rope", "norm": "pre"}},
        "workload": {"kind": "decode", "batch_size": 2, "seq_len": 8, "context_len": 63},
        "measure": {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0,
                    "max_samples": 10, "rounds": 1},
        "sweep": {"grid": {"model.overrides.n_kv_heads": [None, 2]}}}, "t"), "cpu")
    lifecycle.run(points_plan(points, tmp_path / "run"), reports=False)
    mha, gqa = (r["metrics"] for r in records.read_records(tmp_path / "run"))
    by_hand = 2 * 2 * 2 * 2 * 64 * 16 * 4  # layers x (K, V) x B x H_kv x slots x D x fp32 bytes
    assert gqa["kv_cache_bytes"] == gqa["kv_cache_analytic_bytes"] == by_hand
    assert mha["kv_cache_bytes"] == mha["kv_cache_analytic_bytes"] == 2 * by_hand
    assert gqa["kv_read_step_bytes"] * 2 == mha["kv_read_step_bytes"]


KERNEL_CASES = [("dense", {}, "fused"), ("dense", {}, "eager"), ("local", {"window": 8}, "fused"),
                ("block", {"block_size": 6}, "eager"), ("longformer", {"window": 3, "n_global": 2}, "fused"),
                ("bigbird", {"block_size": 4, "random_blocks": 1}, "fused"), ("topk", {"k": 5}, "eager"),
                ("atrous", {"dilation": 3, "kernel": "mask"}, "fused")]


@pytest.mark.parametrize("name, params, ops", KERNEL_CASES,
                         ids=[f"{n}-{p.get('kernel', 'auto')}-{o}" for n, p, o in KERNEL_CASES])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_every_kernel_takes_fewer_kv_heads(name, params, ops, causal, monkeypatch):
    """attend(q with H heads, k and v with H_kv) equals attend with K/V repeated to H heads;
    dense SDPA reads the K/V heads directly (enable_gqa), without a repeated copy."""
    from implementations.attention import kernel

    strategy = registry.create("attention", {"name": name, **params})
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 29, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 29, 8, generator=g, dtype=torch.float64) for _ in range(2))
    kpm = torch.rand(2, 29, generator=g) > 0.2
    want = strategy.attend(q, kernel.repeat_kv(k, 4), kernel.repeat_kv(v, 4), causal=causal,
                           key_padding_mask=kpm, ops=ops)
    repeats = []
    monkeypatch.setattr(kernel, "repeat_kv", lambda t, h, f=kernel.repeat_kv: repeats.append(h) or f(t, h))
    got = strategy.attend(q, k, v, causal=causal, key_padding_mask=kpm, ops=ops)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    direct = strategy.kernel == "mask" or (name == "dense" and ops == "fused")
    assert (repeats == []) == direct
