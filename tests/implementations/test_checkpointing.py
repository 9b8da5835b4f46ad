"""Activation checkpointing (the memory axis): every policy gives the loss and gradients of no
checkpointing exactly in fp64 (dropout included: the recomputation replays the RNG), counts its
recomputation in hardware FLOPs equal to what ``torch.utils.flop_counter`` sees, and wraps the
modules it names, and lowers the measured peak of a training step (the CPU allocator's live
bytes, recorded by torch.profiler's memory profiling: ``test_checkpointing_lowers_the_measured_peak``)."""
from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from implementations import registry
from implementations.flops import flops_breakdown, hardware_train_flops, train_step_flops
from implementations.model import ModelConfig, build_model

POLICIES = [{"name": "full"}, {"name": "every_n", "n": 2}, {"name": "selective", "part": "attention"},
            {"name": "selective", "part": "ffn"}]


def _loss_and_grads(policy, preset_overrides, dtype=torch.float64):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", **preset_overrides)
    model = build_model(cfg).to(dtype)
    registry.create("memory", policy).apply(model)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(3, cfg.vocab_size, (2, 17), generator=gen)
    torch.manual_seed(2)  # dropout draws
    if cfg.is_encoder_decoder:
        logits = model(tokens[:, :-1], tokens[:, :-1])
    else:
        logits = model(tokens[:, :-1])
    loss = model.loss(logits, tokens[:, 1:])
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("overrides", [{"dropout": 0.1}, {"n_encoder_layers": 0, "norm": "pre",
                                                           "positions": "rope", "n_decoder_layers": 3}])
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: registry.create("memory", p).label)
def test_same_loss_and_gradients_as_no_checkpointing_in_fp64(policy, overrides):
    ref_loss, ref_grads = _loss_and_grads({"name": "none"}, overrides)
    loss, grads = _loss_and_grads(policy, overrides)
    assert torch.equal(loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=0, atol=1e-15, msg=name)


@pytest.mark.parametrize("overrides", [{}, {"n_encoder_layers": 0, "norm": "pre"}, {"n_kv_heads": 1}],
                         ids=["post-norm-enc-dec", "pre-norm-decoder", "mqa-enc-dec"])
@pytest.mark.parametrize("policy", [{"name": "none"}] + POLICIES,
                         ids=lambda p: registry.create("memory", p).label)
def test_hardware_flops_count_the_recomputation(policy, overrides):
    """FlopCounterMode counts every matmul the step runs, recomputed forwards included (eager
    ops: the counter cannot see inside SDPA). Eager dense causal attention also computes the
    masked half of its scores, which the analytic count does not charge (``test_flops``): that
    waste is added for the forward, the backward, and each recomputed decoder attention."""
    cfg = ModelConfig.from_preset("tiny", dropout=0.0, ops="eager", **overrides)
    B, S = 2, 16
    model = build_model(cfg)
    strategy = registry.create("memory", policy)
    strategy.apply(model)
    tokens = torch.randint(3, cfg.vocab_size, (B, S))
    with FlopCounterMode(display=False) as counter:
        logits = model(tokens, tokens) if cfg.is_encoder_decoder else model(tokens)
        model.loss(logits, tokens).backward()
    n = cfg.n_decoder_layers
    waste = 4 * B * cfg.n_heads * cfg.head_dim * (S * S - S * (S + 1) // 2)  # per decoder layer
    redone = sum(bool(strategy.parts(i, n) & {"block", "attention"}) for i in range(n))
    expected = hardware_train_flops(cfg, B, S, strategy)
    assert counter.get_total_flops() == expected + (3 * n + redone) * waste
    recomputed = expected - train_step_flops(cfg, B, S)
    every_layer = sum(v for k, v in flops_breakdown(cfg, B, S).items() if k != "lm_head")
    if strategy.name == "full" and cfg.norm == "post":  # ends in a LayerNorm: all of it again
        assert recomputed == every_layer
    if strategy.name == "full" and cfg.norm == "pre":  # ends in fc2 + residual: fc2 skipped
        assert recomputed == every_layer - n * 2 * B * S * cfg.d_ff * cfg.d_model
    if strategy.name == "none":
        assert recomputed == 0


def test_policies_wrap_the_modules_they_name_and_label_their_parameters():
    cfg = ModelConfig.from_preset("tiny", n_decoder_layers=3)  # 2 encoder + 3 decoder layers
    counts = {}
    for policy in [{"name": "none"}] + POLICIES:
        strategy = registry.create("memory", policy)
        model = build_model(cfg)
        counts[strategy.label] = strategy.apply(model)
        assert strategy.apply(model) == 0  # idempotent
    assert counts == {"none": 0, "full": 5, "every_n2": 3, "selective_attention": 2 + 3 * 2,
                      "selective_ffn": 5}
    ctx = registry.Context(workload="forward")
    assert registry.create("memory", "full").not_supported_reasons(ctx)
    assert registry.create("memory", "none").not_supported_reasons(ctx) == []
    with pytest.raises(registry.StrategyError, match="n: got 0"):
        registry.create("memory", {"name": "every_n", "n": 0})
    with pytest.raises(registry.StrategyError, match="part"):
        registry.create("memory", {"name": "selective", "part": "norm"})


def _peak_live_bytes(policy) -> int:
    """Measured peak of the CPU allocator's live bytes over one training step: torch.profiler's
    memory profiling records every allocation and free the allocator makes (``[memory]``
    events, +/- bytes, in time order); the running sum's maximum is the peak. Exact at these
    sizes, unlike the process RSS, which the allocator's retained free blocks blur."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", ops="eager", n_encoder_layers=0, n_decoder_layers=4)
    model = build_model(cfg)
    registry.create("memory", policy).apply(model)
    tokens = torch.randint(3, cfg.vocab_size, (4, 128))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model.loss(model(tokens), tokens).backward()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    assert len(events) > 100  # the step's allocations were seen
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def test_checkpointing_lowers_the_measured_peak():
    """Eager dense attention keeps (B, H, S, S) probabilities per layer: checkpointing every
    layer keeps one layer's, attention-only checkpointing none of them (one recomputed)."""
    none, full = _peak_live_bytes({"name": "none"}), _peak_live_bytes({"name": "full"})
    attention = _peak_live_bytes({"name": "selective", "part": "attention"})
    every2 = _peak_live_bytes({"name": "every_n", "n": 2})
    probs = 4 * 4 * 128 * 128 * 4  # one layer's probabilities, bytes
    assert full < every2 < none and attention < none
    assert none - full > 2 * probs  # at least the probabilities of 2 of the 4 layers saved
