"""Compression strategies, generated from the registry: each one runs on this CPU or says why not;
its quality cost and weight bytes are measured against the uncompressed model, and each sparse
format is checked against the plain dense computation it replaces."""
from __future__ import annotations

import copy

import pytest
import torch

from implementations import registry
from implementations.compression import quality
from implementations.compression.base import compressible
from implementations.compression.magnitude import CsrLinear, magnitude_mask
from implementations.compression.semi_structured import prune_2_4
from implementations.model import ModelConfig, build_model
from implementations.padding import Batch
from implementations.registry import Context

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = Context(device="cpu", precision="fp32", workload="forward")
SMALL = {"magnitude": [{"sparsity": 0.5}, {"sparsity": 0.9, "format": "csr"}]}
STRATEGIES = [registry.create("compression", {"name": n, **p})
              for n in registry.names("compression") for p in SMALL.get(n, [{}])]
INT8_WEIGHT_ONLY_RTOL = 0.02  # ||logits_int8 - logits_fp32|| / ||logits_fp32|| on the tiny model


def tiny():
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", n_encoder_layers=0, norm="pre", positions="rope")
    return build_model(cfg).eval()


def batches():
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(3, 256, (2, 4, 48), generator=gen)
    return [Batch(t, t.roll(-1, dims=1), None, None, None, t.numel(), t.numel()) for t in tokens]


def fp32():
    return registry.create("precision", "fp32")


def AUTOCAST():
    return fp32().autocast("cpu")


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.label)
def test_each_strategy_runs_on_cpu_or_says_why_not(strategy):
    reasons = strategy.not_supported_reasons(CPU)
    if reasons:
        assert all(isinstance(r, str) and len(r) > 15 for r in reasons)
        return
    model = tiny()
    ref = quality.outputs(model, batches(), False, AUTOCAST)
    before = quality.weight_bytes(model)
    strategy.compress(model, "cpu", fp32())
    out = quality.outputs(model, batches(), False, AUTOCAST)
    cost = quality.quality_cost(ref, out)
    assert set(cost) == {"compression_logits_rel_diff", "compression_loss_rel_diff"}
    if strategy.name == "none":
        assert cost == {"compression_logits_rel_diff": 0.0, "compression_loss_rel_diff": 0.0}
    else:  # a real change of the weights, small enough to keep the model's predictions sane
        assert 0 < cost["compression_logits_rel_diff"] < 0.6
        assert 0 <= cost["compression_loss_rel_diff"] < 0.1
    after = quality.weight_bytes(model)
    assert after <= before and (after < before) == (strategy.label not in ("none", "magnitude_s50"))


def test_gpu_only_strategies_name_the_device_and_train_is_refused():
    reasons = {s.label: s.not_supported_reasons(CPU) for s in STRATEGIES}
    for label in ("float8", "int4_weight_only", "semi_structured"):
        assert reasons[label] and "cpu" in reasons[label][0]
    for label in ("none", "int8_weight_only", "int8_dynamic", "magnitude_s50"):
        assert reasons[label] == []
    train = Context(device="cpu", workload="train")
    assert registry.create("compression", "int8_weight_only").not_supported_reasons(train) == [
        "compression is for inference (forward, prefill, decode, generate), not train"]
    hopper = Context(device="cuda", precision="amp_bf16", gpu_capability=(9, 0))
    ampere = Context(device="cuda", precision="amp_bf16", gpu_capability=(8, 0))
    f8 = registry.create("compression", "float8")
    assert f8.not_supported_reasons(hopper) == [] and "8.9" in f8.not_supported_reasons(ampere)[0]
    assert registry.create("compression", "semi_structured").not_supported_reasons(ampere) == []


def test_int8_weight_only_stays_close_to_fp32_and_quarters_the_linear_bytes():
    model = tiny()
    linear_bytes = sum(m.weight.numel() * 4 for _, m in compressible(model))
    ref = quality.outputs(model, batches(), False, AUTOCAST)
    before = quality.weight_bytes(model)
    registry.create("compression", "int8_weight_only").compress(model, "cpu", fp32())
    cost = quality.quality_cost(ref, quality.outputs(model, batches(), False, AUTOCAST))
    assert cost["compression_logits_rel_diff"] < INT8_WEIGHT_ONLY_RTOL
    assert cost["compression_loss_rel_diff"] < 1e-3
    rows = sum(m.weight.shape[0] for _, m in compressible(model))
    # int8 data (1/4 of fp32) + one fp32 scale and one int8 zero point per output row
    assert before - quality.weight_bytes(model) == linear_bytes * 3 // 4 - rows * 5
    assert model.lm_head.weight is model.tok.weight and model.tok.weight.dtype == torch.float32


def test_magnitude_pruning_keeps_the_largest_weights_and_csr_equals_the_dense_pruned_layer():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    mask = magnitude_mask(linear.weight.detach(), 0.75)
    assert int(mask.sum()) == 64 * 96 // 4
    kept, dropped = linear.weight.detach().abs()[mask], linear.weight.detach().abs()[~mask]
    assert kept.min() >= dropped.max()
    x = torch.randn(2, 5, 64)
    dense = torch.nn.functional.linear(x, linear.weight.detach() * mask, linear.bias)
    csr = CsrLinear(copy.deepcopy(linear), mask)
    assert torch.allclose(csr(x), dense, atol=1e-5)
    assert csr.weight.layout == torch.sparse_csr and csr.weight.col_indices().dtype == torch.int32
    # values + int32 column indices + int32 row pointers: 8 bytes per kept weight + 4 (rows + 1)
    assert quality.tensor_bytes(csr.weight) == 8 * (64 * 96 // 4) + 4 * (96 + 1)


def test_2_4_pruning_zeroes_the_two_smallest_of_every_four():
    w = torch.tensor([[1.0, -4.0, 0.5, 3.0, 0.1, 0.2, -0.3, 0.4]])
    assert torch.equal(prune_2_4(w), torch.tensor([[0.0, -4.0, 0.0, 3.0, 0.0, 0.0, -0.3, 0.4]]))
    big = prune_2_4(torch.randn(32, 64))
    assert ((big.reshape(32, 16, 4) != 0).sum(-1) == 2).all()
