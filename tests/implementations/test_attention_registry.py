"""Contract tests generated from the attention registry: a new strategy gets them for free.

Every registered strategy (with small test parameters where known, its defaults otherwise) x
{eager, fused} x {causal, not} x {with, without key padding} x {S divisible, not divisible by
its block / dilation} is checked against a float64 dense reference built from ``dense_mask``:
outputs and gradients w.r.t. q, k and v.
"""
from __future__ import annotations

import pytest
import torch

from implementations import registry

# Small parameters so that S <= ~30 still spans several blocks / chunks / sub-sequences.
SMALL = {
    "dense": [{}],
    "block": [{"block_size": 6}],
    "local": [{"window": 3}, {"window": 10}, {"window": 8}],  # 8: interior groups (S 24, 29)
    "atrous": [{"dilation": 4}, {"dilation": 3, "window": 7}],
    "longformer": [{"window": 3, "n_global": 2},
                   {"window": 4, "dilation": 2, "n_global": 1, "global_tokens": [13, 40]}],
    "bigbird": [{"block_size": 4, "window_blocks": 1, "global_blocks": 1, "random_blocks": 2},
                {"block_size": 6, "window_blocks": 0, "global_blocks": 0, "random_blocks": 1}],
    "topk": [{"k": 5, "chunk": 7}],
    "linformer": [{"k": 5}, {"k": 40, "share_kv": True}],  # 40: more projected keys than S
}
BY_SCORE = {"topk"}  # picks keys by score: no positional rule for a mask kernel
PROJECTED = {"linformer"}  # attends to keys projected along the sequence, by its own weights
SEQ_LENS = (24, 29)  # 24 is divisible by 6, 4 and 3; 29 by none of them


def strategies():
    """Every pattern with its small parameters, and each sparse one once more on the ``mask``
    kernel (one S x S mask instead of groups). FlexAttention: ``test_flex.py``."""
    out, masked = [], []
    for name in registry.names("attention"):
        for params in SMALL.get(name, [{}]):
            out.append(registry.create("attention", {"name": name, **params}))
        if name != "dense" and name not in BY_SCORE | PROJECTED:
            masked.append(registry.create("attention", {"name": name, **SMALL.get(name, [{}])[0],
                                                        "kernel": "mask"}))
    return out + masked


STRATEGIES = strategies()
IDS = [s.label for s in STRATEGIES]


def reference(q, k, v, mask):
    """Float64 textbook attention under an explicit bool ``mask`` (broadcast to (B, H, S_q, S_k));
    rows with no allowed key give zeros, with finite gradients."""
    scores = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    top = scores.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    e = (scores - top).exp()  # exactly 0 where masked
    denom = e.sum(-1, keepdim=True)
    return (e / torch.where(denom > 0, denom, torch.ones_like(denom))) @ v


def expected_mask(strategy, q, k, mask):
    """The pairs the reference attends: ``mask`` (the pattern's positional mask with padding
    and segments), and for a pattern that picks keys by score, the ``k`` highest float64 scores
    among them, found here by a full sort (not ``topk``)."""
    if strategy.name not in BY_SCORE:
        return mask
    scores = (q @ k.transpose(-2, -1)).detach().masked_fill(~mask, float("-inf"))
    rank = scores.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)  # 0: highest
    return mask & (rank < strategy.k)


def qkv(B, H, S_q, S_k, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda S: torch.randn(B, H, S, D, generator=g, dtype=torch.float64, requires_grad=True)
    return make(S_q), make(S_k), make(S_k)


def padding_mask(B, S, seed=1):
    """Batch 0: random holes; batch 1: left padding (so early causal queries see no real key)."""
    g = torch.Generator().manual_seed(seed)
    kpm = torch.rand(B, S, generator=g) > 0.3
    kpm[1, :5] = False
    kpm[1, 5:] = True
    return kpm


def weights_for(strategy, max_len=64):
    """The parameters a pattern owns (linformer's projections), seeded, in float64; else None."""
    torch.manual_seed(7)
    weights = strategy.make_weights(max_len)
    return None if weights is None else weights.double()


def projected(weights, k, v, kpm):
    """Linformer's float64 reference: padded keys and values zeroed, then projected along the
    sequence by ``E[:, :S]`` and ``F[:, :S]`` (``F = E`` when shared)."""
    S = k.shape[2]
    real = torch.ones(k.shape[0], S, dtype=k.dtype) if kpm is None else kpm.to(k.dtype)
    E = weights.E[:, :S]
    F = E if weights.F is None else weights.F[:, :S]
    return (torch.einsum("rs,bhsd,bs->bhrd", E, k, real),
            torch.einsum("rs,bhsd,bs->bhrd", F, v, real))


def check_against_reference(strategy, q, k, v, mask, **kwargs):
    """The pattern's output and gradients (w.r.t. q, k, v and its own weights) equal the float64
    reference under ``mask``; a projected pattern attends, unmasked, to its projected keys."""
    weights = weights_for(strategy)
    out = strategy.attend(q, k, v, weights=weights, **kwargs)
    if weights is not None:
        k_ref, v_ref = projected(weights, k, v, kwargs.get("key_padding_mask"))
        ref = reference(q, k_ref, v_ref, torch.ones(1, dtype=torch.bool))
    else:
        ref = reference(q, k, v, expected_mask(strategy, q, k, mask.expand(*q.shape[:3], k.shape[2])))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    g = torch.randn_like(ref)
    inputs = (q, k, v) + (() if weights is None else tuple(weights.parameters()))
    grads = torch.autograd.grad((out * g).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * g).sum(), inputs)
    for got, want, name in zip(grads, ref_grads, ["q", "k", "v", "E", "F"]):
        assert torch.isfinite(got).all(), f"non-finite d{name}"
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10, msg=f"d{name} differs")


def refuses_causal(strategy, q, k, v, **kwargs) -> bool:
    """True (after checking the refusal) when ``strategy`` has no causal form and the call is
    causal or packed: it raises ``KernelNotSupported`` naming why, never a wrong answer."""
    from implementations.attention.grid import KernelNotSupported

    if strategy.supports_causal or not (kwargs["causal"] or kwargs.get("segment_ids") is not None):
        return False
    with pytest.raises(KernelNotSupported, match="not causal"):
        strategy.attend(q, k, v, weights=weights_for(strategy), **kwargs)
    return True


@pytest.mark.parametrize("S", SEQ_LENS)
@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "pad"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("ops", ["eager", "fused"])
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
def test_matches_dense_reference(strategy, ops, causal, padded, S):
    B, H = 2, 3
    q, k, v = qkv(B, H, S, S)
    mask = strategy.dense_mask(S, S, causal)  # (S, S)
    kpm = padding_mask(B, S) if padded else None
    if padded:
        mask = mask & kpm[:, None, None, :]
    if not refuses_causal(strategy, q, k, v, causal=causal, key_padding_mask=kpm, ops=ops):
        check_against_reference(strategy, q, k, v, mask, causal=causal, key_padding_mask=kpm,
                                ops=ops)


CPU_SDPA = {"math": "math", "flash": "flash_cpu"}  # the backends a CPU build has -> recorded name


@pytest.mark.parametrize("backend", sorted(CPU_SDPA))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
def test_each_sdpa_backend_matches_the_reference(strategy, causal, backend):
    """``ops: {name: fused, sdpa_backend: B}`` restricts SDPA to B for the whole point: every
    pattern is exact on each backend a CPU build has (padding and S not divisible included),
    and B is the kernel that really ran."""
    from harness.measure.sdpa_backends import RecordKernels

    ops = registry.create("ops", {"name": "fused", "sdpa_backend": backend})
    B, H, S = 2, 3, 29
    q, k, v = qkv(B, H, S, S, seed=5)
    kpm = padding_mask(B, S)
    mask = strategy.dense_mask(S, S, causal) & kpm[:, None, None, :]
    if refuses_causal(strategy, q, k, v, causal=causal, key_padding_mask=kpm, ops="fused"):
        return
    with ops.kernel_context(), RecordKernels() as seen:
        check_against_reference(strategy, q, k, v, mask, causal=causal, key_padding_mask=kpm,
                                ops="fused")
    assert seen.backends() == ([] if strategy.name in BY_SCORE else [CPU_SDPA[backend]])


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("ops", ["eager", "fused"])
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
def test_segment_ids_and_padding(strategy, ops, causal):
    """Packed sequences: a query sees only keys of its own segment (and real tokens)."""
    B, H, S = 2, 2, 29
    q, k, v = qkv(B, H, S, S, seed=3)
    seg = torch.tensor([[0] * 9 + [1] * 13 + [2] * 7, [0] * 20 + [1] * 9])
    kpm = torch.ones(B, S, dtype=torch.bool)
    kpm[1, 26:] = False
    mask = strategy.dense_mask(S, S, causal) & (seg[:, None, :, None] == seg[:, None, None, :])
    mask = mask & kpm[:, None, None, :]
    if not refuses_causal(strategy, q, k, v, causal=causal, key_padding_mask=kpm,
                          segment_ids=seg, ops=ops):
        check_against_reference(strategy, q, k, v, mask, causal=causal, key_padding_mask=kpm,
                                segment_ids=seg, ops=ops)


@pytest.mark.parametrize("ops", ["eager", "fused"])
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
def test_decode_with_q_offset_matches_full_causal(strategy, ops):
    """KV-cache decoding: query t alone (q_offset = t) equals row t of the full causal attention;
    a chunk of 5 queries at the end (chunked prefill) equals the last 5 rows."""
    B, H, S = 2, 2, 29
    q, k, v = qkv(B, H, S, S, seed=4)
    kpm = padding_mask(B, S)
    if refuses_causal(strategy, q, k, v, causal=True, key_padding_mask=kpm, ops=ops):
        return
    full = strategy.attend(q, k, v, causal=True, key_padding_mask=kpm, ops=ops)
    for t in (0, 1, 7, 17, S - 1):
        step = strategy.attend(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1], causal=True,
                               key_padding_mask=kpm[:, :t + 1], q_offset=t, ops=ops)
        torch.testing.assert_close(step, full[:, :, t:t + 1], rtol=1e-9, atol=1e-10)
    tail = strategy.attend(q[:, :, -5:], k, v, causal=True, key_padding_mask=kpm, q_offset=S - 5,
                           ops=ops)
    torch.testing.assert_close(tail, full[:, :, -5:], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("ops", ["eager", "fused"])
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
def test_cross_attention_shapes(strategy, ops):
    """S_q != S_k (cross-attention): the rule applies to (query position, key position)."""
    q, k, v = qkv(2, 2, 11, 26, seed=5)
    kpm = padding_mask(2, 26)
    mask = strategy.dense_mask(11, 26, False) & kpm[:, None, None, :]
    check_against_reference(strategy, q, k, v, mask, causal=False, key_padding_mask=kpm, ops=ops)


@pytest.mark.parametrize("S", [1, 2, 5, 24, 29, 40])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
def test_allowed_pairs_is_exact(strategy, causal, S, monkeypatch):
    if strategy.name in PROJECTED:  # the (query, projected key) scores its attention computes
        if causal:
            with pytest.raises(ValueError, match="not causal"):
                strategy.allowed_pairs(S, causal)
            return
        from implementations.attention import kernel

        seen, inner = [], kernel.inner_attention
        monkeypatch.setattr(kernel, "inner_attention", lambda q, k, *a, **kw: (
            seen.append(q.shape[-2] * k.shape[-2]), inner(q, k, *a, **kw))[1])
        q = torch.randn(1, 1, S, 4, dtype=torch.float64)
        strategy.attend(q, q, q, causal=False, weights=weights_for(strategy))
        assert strategy.allowed_pairs(S, causal) == sum(seen) > 0
        return
    rows = strategy.dense_mask(S, S, causal).sum(-1)  # candidates per query
    if strategy.name in BY_SCORE:  # keeps the k best of them
        rows = rows.clamp(max=strategy.k)
    assert strategy.allowed_pairs(S, causal) == int(rows.sum())
    assert strategy.scored_pairs(S, causal) >= strategy.allowed_pairs(S, causal)


@pytest.mark.parametrize("ops", ["eager", "fused"])
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
def test_no_nan_when_every_key_is_padding(strategy, ops):
    """Batch 1 has no real key at all: zeros out, finite (zero) gradients, batch 0 unaffected."""
    q, k, v = qkv(2, 2, 13, 13, seed=6)
    kpm = torch.ones(2, 13, dtype=torch.bool)
    kpm[1] = False
    causal, weights = strategy.supports_causal, weights_for(strategy)
    out = strategy.attend(q, k, v, causal=causal, key_padding_mask=kpm, ops=ops, weights=weights)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    for grad in grads:
        assert torch.isfinite(grad).all()
        assert torch.equal(grad[1], torch.zeros_like(grad[1]))
    alone = strategy.attend(q[:1], k[:1], v[:1], causal=causal, ops=ops, weights=weights)
    torch.testing.assert_close(out[:1], alone)


POSITIONAL = [s for s in STRATEGIES if s.name not in BY_SCORE | PROJECTED]  # topk: test_attention.py
BOUNDED = [s for s in STRATEGIES if s.name not in BY_SCORE]


@pytest.mark.parametrize("strategy", BOUNDED, ids=[s.label for s in BOUNDED])
def test_sparse_work_is_bounded(strategy, monkeypatch):
    """No S x S score matrix: the scores computed are at most a small multiple of the allowed
    pairs (block and linformer: 1x, local and atrous: chunk overlap <= 3x plus edge padding)."""
    from implementations.attention import kernel

    seen = []
    inner = kernel.inner_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append(q.shape[:-1].numel() * k.shape[-2])  # scores computed (B = H = 1)
        return inner(q, k, v, *args, **kwargs)

    monkeypatch.setattr(kernel, "inner_attention", spy)
    S = 240
    q = torch.randn(1, 1, S, 4)
    strategy.attend(q, q, q, causal=False, ops="eager", weights=strategy.make_weights(S))
    quadratic = strategy.name == "dense" or strategy.kernel == "mask"
    budget = S * S if quadratic else 4 * strategy.allowed_pairs(S, False) + 16 * S
    assert seen and sum(seen) <= budget
    if not quadratic:
        assert sum(seen) < S * S / 2
