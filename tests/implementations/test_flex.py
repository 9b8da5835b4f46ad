"""The attention kernels beyond ``auto``: flex (FlexAttention), flash_attn, and their refusals.

Every pattern's rule runs as a FlexAttention ``mask_mod`` against the float64 reference (with
causal, key padding, segments, S not divisible). Those run FlexAttention uncompiled (its eager
path evaluates the same block mask and rule, in float64); the compiled CPU kernel, which takes
8-25 s to build per pattern on this machine, is checked on two patterns in float32.
"""
from __future__ import annotations

import pytest
import torch
from test_attention_registry import POSITIONAL, padding_mask, qkv, reference

from harness.run import lifecycle
from harness.run.plan import points_plan
from implementations import registry
from implementations.attention import flex
from implementations.registry import Context

AUTO = [s for s in POSITIONAL if s.kernel == "auto"]  # topk has no positional rule
PATTERNS = {s.name: s for s in reversed(AUTO)}  # the first small parameters of each


def with_kernel(strategy, kernel: str):
    return registry.create("attention", {**registry.to_spec(strategy), "kernel": kernel})


@pytest.fixture
def eager_flex(monkeypatch):
    """FlexAttention uncompiled: the same rule and block mask, float64, no compile."""
    from torch.nn.attention.flex_attention import flex_attention

    monkeypatch.setattr(flex, "compiled_flex", lambda: flex_attention)
    monkeypatch.setattr(flex, "CPU_DTYPES", (*flex.CPU_DTYPES, torch.float64))  # eager has it
    monkeypatch.setattr(flex, "COMPILE_MASKS", False)


@pytest.mark.parametrize("batch_terms", ["none", "padding", "segments"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("strategy", list(PATTERNS.values()), ids=list(PATTERNS))
def test_each_patterns_rule_as_a_mask_mod_matches_the_reference(strategy, causal, batch_terms,
                                                                 eager_flex):
    B, H, S = 2, 3, 29
    q, k, v = (t.detach() for t in qkv(B, H, S, S, seed=7))
    mask = strategy.dense_mask(S, S, causal)
    kwargs = {}
    if batch_terms == "padding":
        kwargs["key_padding_mask"] = padding_mask(B, S)
        mask = mask & kwargs["key_padding_mask"][:, None, None, :]
    if batch_terms == "segments":
        seg = torch.tensor([[0] * 9 + [1] * 13 + [2] * 7, [0] * 20 + [1] * 9])
        kwargs["segment_ids"] = seg
        mask = mask & (seg[:, None, :, None] == seg[:, None, None, :])
    out = with_kernel(strategy, "flex").attend(q, k, v, causal=causal, **kwargs)
    torch.testing.assert_close(out, reference(q, k, v, mask), rtol=1e-9, atol=1e-10)


def test_the_block_mask_of_a_pattern_alone_is_built_once_per_shape(eager_flex):
    strategy = with_kernel(PATTERNS["local"], "flex")
    q = torch.randn(1, 2, 40, 8, dtype=torch.float64)
    before = flex.STATS["block_masks"]
    for _ in range(3):
        strategy.attend(q, q, q, causal=True)
    assert flex.STATS["block_masks"] == before + 1  # cached: (pattern, S, causal, device)
    kpm = torch.ones(1, 40, dtype=torch.bool)
    strategy.attend(q, q, q, causal=True, key_padding_mask=kpm)
    strategy.attend(q, q, q, causal=True, key_padding_mask=kpm)
    assert flex.STATS["block_masks"] == before + 3  # the batch's padding: built per call


def test_decoding_and_cross_attention_fall_back_to_one_mask(eager_flex):
    """flex computes self-attention; a decode step (q_offset) or S_q != S_k takes one mask."""
    strategy = with_kernel(PATTERNS["local"], "flex")
    q, k, v = (t.detach() for t in qkv(2, 2, 29, 29, seed=8))
    full = strategy.attend(q, k, v, causal=True)
    step = strategy.attend(q[:, :, 17:18], k[:, :, :18], v[:, :, :18], causal=True, q_offset=17)
    torch.testing.assert_close(step, full[:, :, 17:18], rtol=1e-9, atol=1e-10)


@pytest.mark.slow
def test_compiled_flex_on_cpu_matches_the_reference_for_two_patterns_in_one_process():
    """The real compiled kernel, float32; block after bigbird in one process is the case that
    miscompiles without ``one_pattern_per_compile``. Fully padded rows give zeros."""
    B, H, S = 2, 3, 29
    for name, causal in (("bigbird", False), ("block", True)):
        strategy = with_kernel(PATTERNS[name], "flex")
        q, k, v = qkv(B, H, S, S, seed=9)
        kpm = padding_mask(B, S)
        kpm[0] = False  # no real key at all in batch 0
        mask = PATTERNS[name].dense_mask(S, S, causal) & kpm[:, None, None, :]
        out = strategy.attend(q.float().detach(), k.float().detach(), v.float().detach(),
                              causal=causal, key_padding_mask=kpm)
        assert out.dtype == torch.float32 and torch.equal(out[0], torch.zeros_like(out[0]))
        torch.testing.assert_close(out.double(), reference(q, k, v, mask).detach(), rtol=1e-5,
                                   atol=1e-5)


def test_refusals_are_reasons_before_a_worker_and_not_supported_inside_one():
    from harness.measure.faults import classify

    local, block = PATTERNS["local"], PATTERNS["block"]
    train_cpu = Context(device="cpu", workload="train")
    assert any("no backward on CPU" in r
               for r in with_kernel(local, "flex").not_supported_reasons(train_cpu))
    assert with_kernel(local, "flex").not_supported_reasons(Context(device="cpu")) == []
    assert with_kernel(local, "flex").not_supported_reasons(Context(device="cuda",
                                                                    workload="train")) == []
    flash_block = with_kernel(block, "flash_attn").not_supported_reasons(Context(device="cuda"))
    assert any("only dense and local" in r for r in flash_block)
    flash_local = with_kernel(local, "flash_attn").not_supported_reasons(Context(device="cpu"))
    assert any("CUDA only" in r for r in flash_local)
    assert not any("only dense" in r for r in flash_local)
    q = torch.randn(1, 1, 8, 4, dtype=torch.float64)
    with pytest.raises(NotImplementedError) as refused:  # no float64 in CPU FlexAttention
        with_kernel(local, "flex").attend(q, q, q, causal=True)
    assert classify(refused.value) == "not_supported"
    with pytest.raises(NotImplementedError, match="recurs apart") as refused:  # not one sequence
        with_kernel(local, "flash_attn").attend(q, q, q, causal=True,
                                                segment_ids=torch.tensor([[1, 1, 2, 2, 1, 1, 3, 3]]))
    assert classify(refused.value) == "not_supported"
    with pytest.raises(NotImplementedError, match="only dense and local") as refused:
        with_kernel(block, "flash_attn").attend(q, q, q, causal=True)  # never a dense stand-in
    assert classify(refused.value) == "not_supported"
    assert classify(NotImplementedError("a pattern without allowed_pairs")) == "error"


@pytest.mark.slow
def test_a_sweep_records_flex_forward_and_each_refusal_with_its_reason(tmp_path):
    """Through real workers: flex forward runs (compile_s and block-mask cost recorded, the
    loss equal to the auto kernel's); flex train on CPU and flash_attn are not_supported with
    their reasons, nothing crashed."""
    from harness import records
    from harness.suite.loader import parse_suite
    from harness.suite.sweep import expand

    local = {"name": "local", "window": 4}
    points = expand(parse_suite({
        "name": "kernels", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 0}},
        "workload": {"kind": "forward", "batch_size": 2, "seq_len": 32, "num_batches": 1},
        "measure": {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0,
                    "max_samples": 10, "rounds": 1},
        "sweep": {"grid": {"strategies.attention": [{**local, "kernel": k}
                                                    for k in ("flex", "flash_attn")],
                           "workload.kind": ["forward", "train"]}},
    }, "t"), "cpu")
    lifecycle.run(points_plan(points, tmp_path / "run"), reports=False)
    got = {(r["params"]["attention"], r["params"]["kind"]): r
           for r in records.read_records(tmp_path / "run")}
    ran = got[("local_w4_flex", "forward")]
    assert ran["status"] == "ok", ran["error"]
    assert ran["metrics"]["compile_s"] > 0 and ran["metrics"]["flex_block_masks"] >= 1
    assert 0 < ran["metrics"]["flex_block_mask_ms"] < 1e3 * ran["metrics"]["compile_s"]
    train = got[("local_w4_flex", "train")]
    assert train["status"] == "not_supported" and "no backward on CPU" in train["error"]
    for kind in ("forward", "train"):
        refused = got[("local_w4_flash_attn", kind)]
        assert refused["status"] == "not_supported" and "CUDA only" in refused["error"]


def test_flex_reads_fewer_kv_heads_directly(eager_flex):
    """GQA: FlexAttention's enable_gqa, no repeated K/V, same result as repeating them."""
    from implementations.attention.kernel import repeat_kv

    strategy = with_kernel(PATTERNS["local"], "flex")
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, 29, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 29, 8, generator=g, dtype=torch.float64) for _ in range(2))
    want = with_kernel(PATTERNS["local"], "auto").attend(q, repeat_kv(k, 4), repeat_kv(v, 4),
                                                        causal=True)
    torch.testing.assert_close(strategy.attend(q, k, v, causal=True), want, rtol=1e-9, atol=1e-10)
