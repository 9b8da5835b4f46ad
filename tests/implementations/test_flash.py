"""The flash_attn kernel's own side of the call, on CPU, against a stand-in for the package
(``tests/fake_flash_attn.py``: flash-attn's documented semantics in plain tensor ops; the real
package runs in the GPU check): layouts, GQA, and ``flash_attn_varlen_func`` for key padding and
packed rows (unpadding, ``cu_seqlens``, scattering back).

Every real position's output and gradients equal the float64 reference of the pattern; a
padded position's output is zero; and in a model, loss and gradients equal the auto kernel's,
which shows that nothing reads the padded rows."""
from __future__ import annotations

import sys

import fake_flash_attn
import pytest
import torch
from test_attention_registry import reference

from implementations import registry
from implementations.attention.grid import KernelNotSupported
from implementations.model import ModelConfig, build_model, forward_batch

S = 29
PATTERNS = [{"name": "dense"}, {"name": "local", "window": 3}, {"name": "local", "window": 10}]


@pytest.fixture(autouse=True)
def fake_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", fake_flash_attn.module())


def flash(spec):
    return registry.create("attention", {**spec, "kernel": "flash_attn"})


def layouts():
    """(key_padding_mask, segment_ids) of rows that exercise the varlen path; holes: random."""
    lengths = torch.tensor([[S], [20], [1]])
    right = torch.arange(S) < lengths
    left = torch.arange(S) >= S - lengths
    seg = torch.tensor([[1] * 9 + [2] * 13 + [0] * 7,  # packed: two sequences, padded tail id 0
                        [1] * 4 + [2] * 25,
                        [1] * 20 + [0] * 9])
    holes = torch.rand(3, S, generator=torch.Generator().manual_seed(1)) > 0.3
    return {"none": (None, None), "right": (right, None), "left": (left, None),
            "packed": (seg > 0, seg), "packed_full": (None, seg), "holes": (holes, None)}


LAYOUTS = layouts()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("spec", PATTERNS, ids=lambda s: registry.create("attention", s).label)
def test_real_positions_match_the_reference_and_padded_ones_are_zero(spec, causal, layout):
    kpm, seg = LAYOUTS[layout]
    strategy = flash(spec)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, S, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(3, 2, S, 8, generator=g, dtype=torch.float64, requires_grad=True)
            for _ in range(2))  # GQA: 2 K/V heads for 4 query heads
    if layout == "holes" and spec["name"] == "local":
        with pytest.raises(KernelNotSupported, match="inside a local sequence"):
            strategy.attend(q, k, v, causal=causal, key_padding_mask=kpm, segment_ids=seg)
        return
    out = strategy.attend(q, k, v, causal=causal, key_padding_mask=kpm, segment_ids=seg)
    mask = strategy.dense_mask(S, S, causal)
    if kpm is not None:
        mask = mask & kpm[:, None, None, :]
    if seg is not None:
        mask = mask & (seg[:, None, :, None] == seg[:, None, None, :])
    ref = reference(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), mask)
    real = (torch.ones(3, S, dtype=torch.bool) if kpm is None else kpm)[:, None, :, None]
    torch.testing.assert_close(out * real, ref * real, rtol=1e-9, atol=1e-10)
    assert torch.equal(out * ~real, torch.zeros_like(out))
    grad = torch.randn_like(ref) * real  # the real rows' gradients
    got = torch.autograd.grad((out * grad).sum(), (q, k, v))
    want = torch.autograd.grad((ref * grad).sum(), (q, k, v))
    for a, b, name in zip(got, want, "qkv"):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=f"d{name} differs")


def test_the_varlen_sequences_are_the_real_runs():
    from implementations.attention.flash import sequences

    kpm, seg = LAYOUTS["packed"]
    index, cu, max_len = sequences(kpm, seg, 3, S, "cpu", windowed=True)
    assert cu.dtype == torch.int32
    assert cu.tolist() == [0, 9, 22, 26, 51, 71] and max_len == 25
    assert index.tolist() == [p for b in range(3) for p in range(b * S, (b + 1) * S) if kpm.flatten()[p]]


def test_a_segment_that_recurs_apart_in_a_row_is_refused():
    seg = torch.tensor([[1] * 10 + [2] * 10 + [1] * 9])
    q = torch.randn(1, 2, S, 8)
    with pytest.raises(KernelNotSupported, match="recurs apart"):
        flash({"name": "dense"}).attend(q, q, q, causal=True, segment_ids=seg)


@pytest.mark.parametrize("padding", ["fixed", "packed"])
@pytest.mark.parametrize("spec", PATTERNS[:2], ids=["dense", "local_w3"])
def test_a_model_trains_exactly_as_on_the_auto_kernel(spec, padding):
    """Loss and every gradient equal the auto kernel's on padded and packed batches: the zeros
    at padded positions never reach a real token or the loss."""
    batch = registry.create("padding", padding).make_batches(
        [30, 11, 23, 7, 17, 25], 3, 32, 256, 0, 0)[0]
    assert batch.key_padding_mask is not None and not batch.key_padding_mask.all()
    losses, grads = [], []
    for kernel in ("auto", "flash_attn"):
        cfg = ModelConfig.from_preset("tiny", n_encoder_layers=0, ops="eager", positions="rope",
                                      norm="pre", n_kv_heads=2, attention=registry.create(
                                          "attention", {**spec, "kernel": kernel}))
        torch.manual_seed(0)
        model = build_model(cfg).double()
        loss = model.loss(forward_batch(model, batch, False), batch.targets)
        loss.backward()
        losses.append(loss)
        grads.append([p.grad for p in model.parameters()])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_the_sequences_are_found_once_per_mask_not_per_layer(monkeypatch):
    """Every layer of a step gets the same mask objects: their varlen sequences (several GPU
    syncs to find) are computed once; a new or modified mask is computed again."""
    from implementations.attention import flash as module

    calls = []
    real_sequences = module.sequences
    monkeypatch.setattr(module, "sequences", lambda *a, **kw: calls.append(1) or real_sequences(*a, **kw))
    kpm, _ = LAYOUTS["right"]
    kpm = kpm.clone()
    strategy, q = flash({"name": "dense"}), torch.randn(3, 2, S, 8)
    first = strategy.attend(q, q, q, causal=True, key_padding_mask=kpm)
    strategy.attend(q, q, q, causal=True, key_padding_mask=kpm)
    assert len(calls) == 1
    kpm[0, -3:] = False  # in place: a new version of the mask
    changed = strategy.attend(q, q, q, causal=True, key_padding_mask=kpm)
    assert len(calls) == 2 and torch.equal(changed[0, :, -3:], torch.zeros_like(changed[0, :, -3:]))
    assert torch.equal(changed[1:], first[1:])


@pytest.mark.parametrize("pattern", [{"name": "dense"}, {"name": "local", "window": 2}])
def test_without_the_package_a_direct_call_refuses_as_not_supported(monkeypatch, pattern):
    """On a machine without flash-attn (every CPU here), calling the kernel is a refusal the
    sweep records as not_supported, never a ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import flash_attn -> ImportError
    strategy = registry.create("attention", {**pattern, "kernel": "flash_attn"})
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(KernelNotSupported, match="needs the flash-attn package"):
        strategy.attend(q, q, q, causal=True)


def test_topk_refuses_a_kernel_it_cannot_honour_on_a_direct_call_too():
    topk = registry.create("attention", {"name": "topk", "k": 4, "kernel": "flex"})
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(KernelNotSupported, match="no positional rule for the flex kernel"):
        topk.attend(q, q, q, causal=False)
