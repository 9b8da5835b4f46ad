"""Strategy-specific attention tests: the exact boundaries of each pattern, labels, validation.

The generic contract (every strategy against a float64 dense reference, gradients, padding,
segments, decoding) lives in ``test_attention_registry.py``.
"""
from __future__ import annotations

import pytest
import torch

from implementations import registry
from implementations.attention import AtrousAttention, BlockAttention, DenseAttention, LocalAttention

OPS = ["eager", "fused"]


def weights_seen(strategy, S, causal, ops):
    """(S, S) attention weights actually used by ``attend``: zero queries make the softmax uniform
    over the allowed keys, and one-hot values read the weights out. Row i = 1/n on its n keys."""
    q = torch.zeros(1, 1, S, S, dtype=torch.float64)
    v = torch.eye(S, dtype=torch.float64)[None, None]  # (1, 1, S, S): value j = e_j
    return strategy.attend(q, q, v, causal=causal, ops=ops)[0, 0]


def keys_of(weights, i):
    return weights[i].nonzero().flatten().tolist()


@pytest.mark.parametrize("ops", OPS)
def test_local_window_is_inclusive_2w_plus_1_keys(ops):
    """Pins the definition: |i - j| <= w (2w + 1 keys), not |i - j| < w (2w - 1 keys)."""
    s = LocalAttention(window=2)
    w = weights_seen(s, 11, causal=False, ops=ops)
    assert keys_of(w, 5) == [3, 4, 5, 6, 7]
    torch.testing.assert_close(w[5, 3:8], torch.full((5,), 0.2, dtype=torch.float64))
    assert keys_of(w, 0) == [0, 1, 2]  # fewer at the edges
    assert keys_of(w, 10) == [8, 9, 10]
    assert s.dense_mask(11, 11, False).sum(1).tolist() == [3, 4] + [5] * 7 + [4, 3]


@pytest.mark.parametrize("ops", OPS)
def test_local_causal_window_has_w_plus_1_keys(ops):
    s = LocalAttention(window=3)
    w = weights_seen(s, 12, causal=True, ops=ops)
    assert keys_of(w, 7) == [4, 5, 6, 7]
    assert keys_of(w, 1) == [0, 1]
    assert s.dense_mask(12, 12, True).sum(1).tolist() == [1, 2, 3] + [4] * 9


@pytest.mark.parametrize("ops", OPS)
def test_last_partial_block_is_kept(ops):
    """S = 10, b = 4: blocks {0..3}, {4..7}, {8, 9}; the last two queries are not dropped."""
    s = BlockAttention(block_size=4)
    w = weights_seen(s, 10, causal=False, ops=ops)
    assert keys_of(w, 3) == [0, 1, 2, 3]
    assert keys_of(w, 4) == [4, 5, 6, 7]
    assert keys_of(w, 8) == keys_of(w, 9) == [8, 9]
    torch.testing.assert_close(w[9, 8:], torch.full((2,), 0.5, dtype=torch.float64))
    wc = weights_seen(s, 10, causal=True, ops=ops)
    assert keys_of(wc, 9) == [8, 9] and keys_of(wc, 8) == [8] and keys_of(wc, 6) == [4, 5, 6]


@pytest.mark.parametrize("ops", OPS)
def test_atrous_sees_every_kth_key(ops):
    s = AtrousAttention(dilation=3)
    w = weights_seen(s, 14, causal=False, ops=ops)
    assert keys_of(w, 7) == [1, 4, 7, 10, 13]
    assert keys_of(weights_seen(s, 14, causal=True, ops=ops), 7) == [1, 4, 7]
    windowed = AtrousAttention(dilation=3, window=6)
    assert keys_of(weights_seen(windowed, 14, causal=False, ops=ops), 7) == [1, 4, 7, 10, 13]
    narrower = AtrousAttention(dilation=3, window=5)  # |i - j| <= 5: 1 and 13 fall out
    assert keys_of(weights_seen(narrower, 14, causal=False, ops=ops), 7) == [4, 7, 10]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("ops", OPS)
def test_atrous_dilation_1_with_window_is_local(ops, causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 8, dtype=torch.float64) for _ in range(3))
    atrous, local = AtrousAttention(dilation=1, window=5), LocalAttention(window=5)
    assert torch.equal(atrous.dense_mask(37, 37, causal), local.dense_mask(37, 37, causal))
    assert atrous.allowed_pairs(37, causal) == local.allowed_pairs(37, causal)
    torch.testing.assert_close(atrous.attend(q, k, v, causal=causal, ops=ops),
                               local.attend(q, k, v, causal=causal, ops=ops))


def test_dense_pairs_and_masks():
    s = DenseAttention()
    assert s.allowed_pairs(7, False) == 49 and s.allowed_pairs(7, True) == 28
    assert torch.equal(s.dense_mask(3, 5, True, q_offset=2),
                       torch.ones(3, 5, dtype=torch.bool).tril(2))


def test_eager_and_fused_agree_in_float32():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 4, 70, 16) for _ in range(3))
    for s in (DenseAttention(), BlockAttention(16), LocalAttention(7), AtrousAttention(3, 20)):
        for causal in (False, True):
            torch.testing.assert_close(s.attend(q, k, v, causal=causal, ops="eager"),
                                       s.attend(q, k, v, causal=causal, ops="fused"),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec,label", [
    ({"name": "dense"}, "dense"),
    ({"name": "block", "block_size": 256}, "block_b256"),
    ({"name": "local", "window": 128}, "local_w128"),
    ({"name": "atrous", "dilation": 4}, "atrous_k4"),
    ({"name": "atrous", "dilation": 2, "window": 64}, "atrous_k2_w64"),
])
def test_labels_and_spec_round_trip(spec, label):
    s = registry.create("attention", spec)
    assert s.label == label
    assert registry.create("attention", registry.to_spec(s)) == s
    assert s.not_supported_reasons(registry.Context()) == []


@pytest.mark.parametrize("spec,field,value", [
    ({"name": "block", "block_size": 0}, "block_size", "0"),
    ({"name": "block", "block_size": 2.5}, "block_size", "2.5"),
    ({"name": "local", "window": -3}, "window", "-3"),
    ({"name": "local", "window": True}, "window", "True"),
    ({"name": "atrous", "dilation": 0}, "dilation", "0"),
    ({"name": "atrous", "dilation": 2, "window": -1}, "window", "-1"),
])
def test_bad_parameters_raise_with_field_value_and_rule(spec, field, value):
    with pytest.raises(ValueError) as info:
        registry.create("attention", spec)
    message = str(info.value)
    assert f"{field}: got {value}, allowed:" in message


@pytest.mark.parametrize("spec", [{"name": "local", "window": 0},
                                  {"name": "atrous", "dilation": 3, "window": 0}])
@pytest.mark.parametrize("ops", ["eager", "fused"])
def test_window_zero_sees_only_itself(spec, ops):
    """|i - j| <= 0: one key per query, the query's own, so attention returns v unchanged."""
    s = registry.create("attention", spec)
    assert torch.equal(s.dense_mask(7, 7, causal=False), torch.eye(7, dtype=torch.bool))
    assert s.allowed_pairs(7, causal=False) == s.allowed_pairs(7, causal=True) == 7
    q, k, v = (torch.randn(1, 2, 7, 4, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(s.attend(q, k, v, causal=False, ops=ops), v)


def test_bad_call_arguments_raise():
    s = LocalAttention(window=2)
    q = torch.randn(1, 2, 6, 4)
    with pytest.raises(ValueError, match="ops must be one of eager, fused; got 'flash'"):
        s.attend(q, q, q, causal=False, ops="flash")
    with pytest.raises(ValueError, match="key_padding_mask must be bool"):
        s.attend(q, q, q, causal=False, key_padding_mask=torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="q_offset must be >= 0"):
        s.attend(q, q, q, causal=True, q_offset=-1)


def test_describe_lists_documented_parameters():
    rows = {r["name"]: r for r in registry.describe("attention")}
    assert {"dense", "block", "local", "atrous"} <= set(rows)
    params = {p["name"]: p for p in rows["atrous"]["params"]}
    assert params["dilation"]["default"] == 2 and params["window"]["default"] is None
    assert all(p["doc"] for r in rows.values() for p in r["params"])


@pytest.mark.slow
def test_sparse_kernel_compiles_to_one_graph():
    """The grouped kernel decides everything from Python ints: ``torch.compile(fullgraph=True)``
    traces it with no graph break (block, local, atrous with and without a window; causal with
    key padding; fused, and eager for local: the grouping is shared), a second call does not
    recompile, and the result is the eager one. ~3 s per compile on a cold cache."""
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, 48, 8) for _ in range(3))
    kpm = torch.rand(1, 48) > 0.3
    cases = [(LocalAttention(8), "eager")] + [
        (s, "fused") for s in (LocalAttention(8), BlockAttention(16), AtrousAttention(3),
                               AtrousAttention(3, window=9))]
    for s, ops in cases:
        torch._dynamo.reset()
        fn = lambda q, k, v: s.attend(q, k, v, causal=True, key_padding_mask=kpm, ops=ops)
        compiled = torch.compile(fn, fullgraph=True, dynamic=False)
        torch.testing.assert_close(compiled(q, k, v), fn(q, k, v), msg=f"{s.label} {ops}")
        with torch.compiler.set_stance("fail_on_recompile"):
            compiled(k, v, q)


COMPILED_TRAIN_STEP = r"""
import torch
from implementations.attention import BlockAttention, LocalAttention

torch.manual_seed(0)
kpm = torch.ones(2, 64, dtype=torch.bool)
kpm[0, 59:] = False
cases = [(LocalAttention(8), True, "fused", None), (LocalAttention(8), False, "eager", kpm),
         (BlockAttention(16), False, "fused", None)]
for s, causal, ops, mask in cases:
    fn = lambda q, k, v: s.attend(q, k, v, causal=causal, key_padding_mask=mask, ops=ops)
    q, k, v = (torch.randn(2, 64, 2, 16).transpose(1, 2).requires_grad_() for _ in range(3))
    want = torch.autograd.grad(fn(q, k, v).square().sum(), (q, k, v))
    torch._dynamo.reset()
    got = torch.autograd.grad(torch.compile(fn, fullgraph=True)(q, k, v).square().sum(), (q, k, v))
    for name, g, w in zip("qkv", got, want):
        torch.testing.assert_close(g, w, msg=f"{s.label} causal={causal} {ops} d{name}")
    print("ok", s.label, causal, ops, flush=True)
"""


@pytest.mark.slow
def test_compiled_train_step_matches_eager():
    """Regression: a compiled forward + backward of the grouped kernel (local causal, local with
    key padding, block) gives the eager gradients. Key windows taken as strided views made the
    compiled CPU backward (inductor's 2-D tiled scatter-add for ``unfold_backward``) write out of
    bounds: wrong gradients, heap corruption or a segfault. Compiled code now reshapes (tiling
    grids) or gathers with ``index_select``. In a subprocess, so that a crash fails this test
    instead of killing pytest. ~20 s on a cold inductor cache (2 CPU cores), ~7 s warm."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", COMPILED_TRAIN_STEP], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, (f"exit code {done.returncode}\n{done.stdout}"
                                  f"\n{done.stderr[-3000:]}")
    assert done.stdout.count("ok ") == 3, done.stdout


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_topk_keeps_exactly_k_keys_per_query(causal):
    """Equal scores (zero queries): each query spreads 1/n over n = min(k, candidates) keys."""
    s = registry.create("attention", {"name": "topk", "k": 4, "chunk": 5})
    w = weights_seen(s, 13, causal=causal, ops="eager")
    for i in range(13):
        n = min(4, i + 1 if causal else 13)
        assert len(keys_of(w, i)) == n
        torch.testing.assert_close(w[i].sum(), torch.tensor(1.0, dtype=torch.float64))
        if causal:
            assert max(keys_of(w, i)) <= i


def test_topk_picks_the_highest_scores_and_equals_dense_when_k_covers_every_key():
    q, k, v = (torch.randn(2, 2, 17, 8, dtype=torch.float64) for _ in range(3))
    dense = DenseAttention().attend(q, k, v, causal=True)
    wide = registry.create("attention", {"name": "topk", "k": 17, "chunk": 4})
    torch.testing.assert_close(wide.attend(q, k, v, causal=True), dense)
    one = registry.create("attention", {"name": "topk", "k": 1, "chunk": 4})
    best = (q @ k.transpose(-2, -1)).argmax(-1)  # (B, H, S): the single key kept
    want = v.gather(2, best[..., None].expand(-1, -1, -1, 8))
    torch.testing.assert_close(one.attend(q, k, v, causal=False), want)


def largest_tensor(fn) -> int:
    """Elements of the largest tensor any operator of ``fn()`` returns (forward and backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        most = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    self.most = max(self.most, t.numel())
            return out

    with Largest() as seen:
        fn()
    return seen.most


def test_topk_never_builds_an_s_by_s_tensor():
    """Every score is computed, but chunk by chunk: no tensor of the forward holds more than
    chunk x S scores (nor the backward: it only scatters the kept scores back per chunk)."""
    S, chunk = 240, 16
    s = registry.create("attention", {"name": "topk", "k": 8, "chunk": chunk})
    q = torch.randn(1, 1, S, 4, requires_grad=True)
    most = largest_tensor(lambda: s.attend(q, q, q, causal=True).sum().backward())
    assert chunk * S <= most < S * S / 4
    assert s.scored_pairs(S, True) == S * (S + 1) // 2  # FLOPs: every score is charged


def test_topk_on_any_other_kernel_is_not_supported_with_its_reason():
    from implementations.registry import Context

    for kernel in ("mask", "flex", "flash_attn"):
        s = registry.create("attention", {"name": "topk", "kernel": kernel})
        assert s.not_supported_reasons(Context()) == [
            f"topk picks keys by score: no positional rule for the {kernel} kernel (auto only)"]
    assert registry.create("attention", {"name": "topk"}).not_supported_reasons(Context()) == []
