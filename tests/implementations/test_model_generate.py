"""Greedy decoding: the KV-cached decode reproduces the full-recompute decode token for token,
for every registered attention pattern, while each pattern's cache keeps and reads only the keys
its decode step may attend (``implementations.kv_cache``)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from implementations import registry
from implementations.generate import generate
from implementations.kv_cache import CachePolicy, KVCache
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


# Parameters small enough that a 6-token prompt + 20 new tokens wrap every ring several times.
SMALL = {"local": [{"window": 2}, {"window": 3}], "block": [{"block_size": 4}],
         "atrous": [{"dilation": 2}, {"dilation": 3, "window": 5}],
         "longformer": [{"window": 2, "n_global": 1, "global_tokens": [7]}],
         "bigbird": [{"block_size": 4, "window_blocks": 0, "global_blocks": 1, "random_blocks": 1}],
         "topk": [{"k": 3, "chunk": 4}], "linformer": [{"k": 4}]}
MASKED_DECODE = {"longformer", "bigbird", "topk"}  # global keys stay readable: keep all, mask each step
POSITIONS_NORMS = [("rope", "pre"), ("sinusoidal", "pre")]
CASES = [({"name": name, **params}, positions, norm)  # every registered pattern
         for name in registry.names("attention") for params in SMALL.get(name, [{}])
         for positions, norm in POSITIONS_NORMS] + [({"name": "local", "window": 3}, "sinusoidal", "post")]
IDS = [f"{registry.create('attention', s).label}-{p}-{n}" for s, p, n in CASES]
CAUSAL = [(case, i) for case, i in zip(CASES, IDS)  # linformer has no causal form: encoder only
          if registry.create("attention", case[0]).supports_causal]


@pytest.mark.parametrize("strategy, positions, norm", CASES, ids=IDS)
def test_cached_decode_equals_uncached_encoder_decoder(strategy, positions, norm):
    model = make(strategy, positions=positions, norm=norm)
    src = tokens(3, 9, seed=1)
    src_mask = torch.arange(9) < torch.tensor([[9], [5], [7]])
    cached = generate(model, src, 20, use_cache=True, src_key_padding_mask=src_mask)
    full = generate(model, src, 20, use_cache=False, src_key_padding_mask=src_mask)
    assert cached.shape == (3, 20)
    assert torch.equal(cached, full)
    assert len(set(cached.flatten().tolist())) >= 6  # a non-trivial sequence, not one repeated id


@pytest.mark.parametrize("strategy, positions, norm", [c for c, _ in CAUSAL],
                         ids=[i for _, i in CAUSAL])
def test_cached_decode_equals_uncached_decoder_only(strategy, positions, norm):
    model = make(strategy, n_encoder_layers=0, positions=positions, norm=norm)
    prompt = tokens(2, 6, seed=2)
    cached = generate(model, prompt, 20, use_cache=True)
    full = generate(model, prompt, 20, use_cache=False)
    assert cached.shape == (2, 20)
    assert torch.equal(cached, full)
    assert len(set(cached.flatten().tolist())) >= 6


def test_every_pattern_declares_a_cache_policy_that_reads_exactly_its_allowed_keys():
    """The keys a policy reads at position i are the allowed keys of query i (causal): the count
    equals the causal mask row's, and the slots read hold exactly those positions; also with
    windows and blocks longer than the sequence (a ring that never wraps)."""
    longer = {"local": [{"window": 100}], "block": [{"block_size": 64}],
              "atrous": [{"dilation": 3, "window": 50}]}
    for name in registry.names("attention"):
        for params in SMALL.get(name, [{}]) + longer.get(name, []):
            strategy = registry.create("attention", {"name": name, **params}).in_self_attention(True)
            policy = strategy.cache_policy()
            if name in MASKED_DECODE:
                assert policy is None, strategy.label
                continue
            assert isinstance(policy, CachePolicy), strategy.label
            L = 40
            mask = strategy.dense_mask(L, L, causal=True)  # (L, L)
            for i in range(L):
                slots = policy.slots(L)
                held = {p % slots: p for p in range(max(0, i + 1 - slots), i + 1)}  # slot -> position
                read = sorted(held[s] for s in policy.read_range(i, L))
                assert read == mask[i].nonzero().flatten().tolist(), (strategy.label, i)
@pytest.mark.parametrize("n_encoder_layers, prompt_len", [(2, 5), (0, 4)])
def test_cached_steps_attend_one_query_to_the_window_only(n_encoder_layers, prompt_len, monkeypatch):
    """local(w=2): the prompt (or start token) attends to itself under the pattern's mask; each
    next step gets exactly min(position + 1, w + 1) keys from a 3-slot ring."""
    model = make({"name": "local", "window": 2}, n_encoder_layers=n_encoder_layers,
                 positions="rope", eos_id=0)  # eos = pad id, which these weights never pick
    calls, append = [], KVCache.append

    def spy(cache, k, v):
        out = append(cache, k, v)
        if cache is caches[0]:
            calls.append((k.shape[2], out[0].shape[2], out[2], out[3], tuple(cache.k.shape)))
        return out

    caches = []
    new_cache = type(model).new_cache
    monkeypatch.setattr(type(model), "new_cache", lambda m, n: caches.extend(new_cache(m, n)) or caches)
    monkeypatch.setattr(KVCache, "append", spy)
    out = generate(model, tokens(1, prompt_len, seed=3), 6, use_cache=True)
    assert out.shape == (1, 6)
    start = 1 if n_encoder_layers else prompt_len  # decoder-only prefills the whole prompt
    ring = (1, 4, 3, 16)  # (B, H, w + 1, D)
    assert calls[0] == (start, start, 0, False, ring)
    assert calls[1:] == [(1, min(start + t + 1, 3), start + t, True, ring) for t in range(5)]
    if n_encoder_layers:  # cross-attention stays dense over the 5 memory keys, K/V computed once
        assert model.decoder[0].cross_attn.strategy.label == "dense"


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
