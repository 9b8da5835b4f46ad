"""Ops strategies: which optimizer implementation each builds, and that eager and fused train the
tiny model to the same loss."""
from __future__ import annotations

import pytest
import torch

from implementations import registry
from implementations.ops.fused import fused_adamw_supported


def create(name, **params):
    return registry.create("ops", {"name": name, **params})


def test_registry_labels_and_model_ops():
    assert registry.names("ops") == ["eager", "fused"]
    assert (create("eager").label, create("fused").label, create("fused", compile=True).label) == \
        ("eager", "fused", "fused_compile")
    assert (create("eager").model_ops, create("fused").model_ops) == ("eager", "fused")
    assert registry.to_spec(create("fused", compile=True)) == {"name": "fused", "compile": True}
    with pytest.raises(ValueError, match="compile: got 'yes'"):
        create("fused", compile="yes")
    assert create("eager").not_supported_reasons(registry.Context()) == []


def test_optimizer_implementations():
    params = [torch.nn.Parameter(torch.randn(3, 3))]
    eager = create("eager").make_optimizer(params, lr=1e-3)
    assert isinstance(eager, torch.optim.AdamW)
    assert eager.defaults["foreach"] is False and eager.defaults["fused"] is False
    fused = create("fused").make_optimizer(params, lr=1e-3)
    assert fused_adamw_supported("cpu") == (torch.__version__ >= "2.4")  # CPU fused AdamW since 2.4
    if fused_adamw_supported("cpu"):
        assert fused.defaults["fused"] is True
    else:
        assert fused.defaults["foreach"] is True
    assert fused.defaults["lr"] == 1e-3
    assert fused_adamw_supported("cuda") == torch.cuda.is_available()


def test_prepare():
    model = torch.nn.Linear(2, 2)
    assert create("eager").prepare(model) is model and create("fused").prepare(model) is model
    compiled = create("fused", compile=True).prepare(model)  # wrapping is lazy: nothing compiles yet
    assert compiled is not model and compiled._orig_mod is model


def train_losses(ops, steps=5, seed=0):
    from implementations.model import ModelConfig, build_model
    from implementations.padding.lengths import sample_lengths

    cfg = ModelConfig.from_preset("tiny", n_encoder_layers=0, ops=ops.model_ops)
    lengths = sample_lengths({"distribution": "uniform", "low": 4, "high": 40}, 12, seed, 40)
    batches = registry.create("padding", "dynamic").make_batches(lengths, 4, 40, cfg.vocab_size, seed, cfg.pad_id)
    torch.manual_seed(seed)
    model = ops.prepare(build_model(cfg))
    opt = ops.make_optimizer(model.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        b = batches[step % len(batches)]
        loss = model.loss(model(b.tokens, key_padding_mask=b.key_padding_mask), b.targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return torch.tensor(losses)


def test_eager_and_fused_train_to_the_same_loss():
    eager, fused = train_losses(create("eager")), train_losses(create("fused"))
    assert eager[-1] < eager[0]  # it trained
    torch.testing.assert_close(fused, eager, rtol=1e-4, atol=0)
