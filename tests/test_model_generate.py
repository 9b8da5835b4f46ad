"""Greedy decoding: the KV-cached decode reproduces the full-recompute decode token for token."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from implementations import registry
from implementations.generate import generate
from implementations.model import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def make(strategy, n_encoder_layers=2, **overrides):
    """A tiny model with larger random weights than the default init, so that greedy decoding
    does not just repeat one token (tied embeddings favour copying the input)."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", attention=registry.create("attention", strategy),
                                  n_encoder_layers=n_encoder_layers, **overrides)
    model = build_model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and name != "tok.weight":
                p.normal_(std=0.6)
    return model


def tokens(B, S, seed):
    return torch.randint(3, 256, (B, S), generator=torch.Generator().manual_seed(seed))


class Spy:
    """Wraps a strategy and records ``(S_q, S_k, q_offset)`` of every ``attend`` call."""

    def __init__(self, strategy):
        self.strategy, self.calls = strategy, []

    def __getattr__(self, name):
        return getattr(self.strategy, name)

    def attend(self, q, k, v, **kw):
        self.calls.append((q.shape[2], k.shape[2], kw["q_offset"]))
        return self.strategy.attend(q, k, v, **kw)


CASES = [  # (strategy, positions, norm)
    ({"name": "dense"}, "sinusoidal", "pre"),
    ({"name": "local", "window": 2}, "rope", "pre"),
    ({"name": "local", "window": 3}, "sinusoidal", "post"),
    ({"name": "block", "block_size": 4}, "rope", "pre"),
]


@pytest.mark.parametrize("strategy, positions, norm", CASES, ids=lambda c: str(c))
def test_cached_decode_equals_uncached_encoder_decoder(strategy, positions, norm):
    model = make(strategy, positions=positions, norm=norm)
    src = tokens(3, 9, seed=1)
    src_mask = torch.arange(9) < torch.tensor([[9], [5], [7]])
    cached = generate(model, src, 20, use_cache=True, src_key_padding_mask=src_mask)
    full = generate(model, src, 20, use_cache=False, src_key_padding_mask=src_mask)
    assert cached.shape == (3, 20)
    assert torch.equal(cached, full)
    assert len(set(cached.flatten().tolist())) >= 6  # a non-trivial sequence, not one repeated id


@pytest.mark.parametrize("strategy, positions, norm", CASES, ids=lambda c: str(c))
def test_cached_decode_equals_uncached_decoder_only(strategy, positions, norm):
    model = make(strategy, n_encoder_layers=0, positions=positions, norm=norm)
    prompt = tokens(2, 6, seed=2)
    cached = generate(model, prompt, 20, use_cache=True)
    full = generate(model, prompt, 20, use_cache=False)
    assert cached.shape == (2, 20)
    assert torch.equal(cached, full)
    assert len(set(cached.flatten().tolist())) >= 6


@pytest.mark.parametrize("n_encoder_layers, prompt_len", [(2, 5), (0, 4)])
def test_cached_steps_attend_one_query_at_its_position(n_encoder_layers, prompt_len):
    model = make({"name": "local", "window": 2}, n_encoder_layers=n_encoder_layers, positions="rope",
                 eos_id=0)  # eos = pad id, which these weights never pick: all 6 steps run
    spy = Spy(model.cfg.attention)
    block = model.decoder[0]
    block.self_attn.strategy = spy
    out = generate(model, tokens(1, prompt_len, seed=3), 6, use_cache=True)
    assert out.shape == (1, 6)
    start = 1 if n_encoder_layers else prompt_len  # decoder-only prefills the whole prompt
    assert spy.calls[0] == (start, start, 0)
    assert spy.calls[1:] == [(1, start + t + 1, start + t) for t in range(5)]
    if n_encoder_layers:  # cross-attention stays dense over the 5 memory keys, K/V computed once
        assert block.cross_attn.strategy.label == "dense"


def test_rows_stop_at_eos_and_are_padded():
    model = make({"name": "dense"}, n_encoder_layers=0)
    prompt = tokens(2, 5, seed=4)
    free = generate(model, prompt, 12)
    eos = int(free[0, 3])  # row 0 emits this id at step 3 (maybe earlier too)
    stop = [int((row == eos).nonzero()[0]) if (row == eos).any() else None for row in free]
    model2 = build_model(dataclasses.replace(model.cfg, eos_id=eos))
    model2.load_state_dict(model.state_dict())
    out = generate(model2, prompt, 12)
    last = max(s if s is not None else 11 for s in stop)
    assert out.shape == (2, last + 1)  # stops once every row has emitted eos (or at the limit)
    for row, s in enumerate(stop):
        end = last + 1 if s is None else s + 1
        assert torch.equal(out[row, :end], free[row, :end])
        assert (out[row, end:] == model.cfg.pad_id).all()


def test_generate_restores_mode_and_validates_lengths():
    model = make({"name": "dense"}, n_encoder_layers=0).train()
    generate(model, tokens(1, 3, seed=5), 2)
    assert model.training
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, tokens(1, 3, seed=5), 0)
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, tokens(1, 250, seed=5), 10)  # 250 + 10 - 1 > 256
