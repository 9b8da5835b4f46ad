"""KV caches that are really sparse: each pattern's cache holds and reads only its allowed keys.

Measured against a hand count: the bytes a prefill allocates for the cache tensors, and the bytes
the caches hold (``held_bytes``, found by walking them), equal layers x 2 x B x H x slots x D x
element size with the slots written out per pattern, and so does ``CachePolicy.cache_bytes``;
a local decode at context 4K holds a window-sized ring (tensor shapes asserted) and its step
matches the uncached forward; the FLOPs ``FlopCounterMode`` sees in a decode step equal
``decode_step_flops`` (a decode step computes only the allowed keys' scores, so here, unlike a
full eager forward, counted and analytic agree exactly for sparse patterns too).
"""
from __future__ import annotations

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from implementations import registry
from implementations.flops import decode_step_flops
from implementations.generate import decode_step, prefill
from implementations.kv_cache import CachePolicy, KVCache, held_bytes
from implementations.model import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("one_thread")

PATTERNS = [{"name": "dense"}, {"name": "local", "window": 16}, {"name": "block", "block_size": 32},
            {"name": "atrous", "dilation": 4, "window": 30}]


def model_of(strategy, ops="fused", max_seq_len=256, **overrides):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", n_encoder_layers=0, positions="rope", norm="pre", ops=ops,
                                  attention=registry.create("attention", strategy),
                                  max_seq_len=max_seq_len, **overrides)
    return build_model(cfg).eval()


def context(B, S, seed=0):
    return torch.randint(3, 256, (B, S), generator=torch.Generator().manual_seed(seed))


class Allocations(TorchDispatchMode):
    """The storages ops return while active: ``{data_ptr: bytes}``, the latest at each address
    (a freed block's address may be reused; a tensor still alive keeps its own)."""

    def __init__(self):
        super().__init__()
        self.storages = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return out


@pytest.mark.parametrize("strategy", PATTERNS, ids=lambda s: s["name"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_analytic_kv_bytes_equal_the_allocated_cache(strategy, dtype):
    model = model_of(strategy).to(dtype)
    cfg, (B, P) = model.cfg, (3, 100)
    with torch.no_grad(), Allocations() as allocations:
        _, state = prefill(model, context(B, P), P + 1)
    # by hand: slots per layer dense P + 1, local w + 1, block b, atrous k (w // k + 1) = 4 x 8
    slots = {"dense": 101, "local": 17, "block": 32, "atrous": 32}[strategy["name"]]
    elem = {torch.float32: 4, torch.bfloat16: 2}[dtype]
    by_hand = 2 * 2 * B * 4 * slots * 16 * elem  # layers x (K, V) x B x H x slots x D x bytes
    tensors = [t for c in state.cache for t in (c.k, c.v)]
    # measured: what the fill allocated for the tensors the caches hold, and what they hold
    allocated = sum(allocations.storages[t.untyped_storage().data_ptr()] for t in tensors)
    assert allocated == held_bytes(state.cache) == held_bytes(state) == by_hand
    policy = cfg.attention.cache_policy()
    assert policy.cache_bytes(B, cfg.n_heads, cfg.head_dim, P + 1, cfg.n_decoder_layers, elem) == by_hand
    assert [tuple(c.k.shape) for c in state.cache] == [(B, 4, slots, 16)] * cfg.n_decoder_layers
    assert all(c.k.dtype == dtype and c.k.is_contiguous() for c in state.cache)


def test_held_bytes_counts_each_storage_once_and_whole():
    base = torch.zeros(10, 8)  # 320 bytes
    holder = type("Holder", (), {})()
    holder.a, holder.parts = base[:2], [base[5:], {"again": base}, (torch.zeros(3, dtype=torch.int8),)]
    assert held_bytes(holder) == 320 + 3
    assert held_bytes(KVCache(10)) == 0


def test_local_decode_at_4k_keeps_a_window_sized_cache_and_matches_the_uncached_forward():
    w, S = 32, 4096
    model = model_of({"name": "local", "window": w}, max_seq_len=S + 1)
    tokens = context(1, S + 1, seed=1)
    with torch.no_grad():
        _, state = prefill(model, tokens[:, :S], S + 1)
        for c in state.cache:
            assert tuple(c.k.shape) == tuple(c.v.shape) == (1, 4, w + 1, 16)  # not (1, 4, 4097, 16)
            assert held_bytes(c) == 2 * (w + 1) * 4 * 16 * 4 and c.length == S
        read, append = [], KVCache.append

        def spy(cache, k, v):
            out = append(cache, k, v)
            read.append(out[0].shape[2])
            return out

        KVCache.append = spy
        try:
            cached = decode_step(model, tokens[:, S], state)  # (1, V)
        finally:
            KVCache.append = append
        full = model(tokens)[:, -1]  # the uncached reference over all 4097 positions
    assert read == [w + 1] * model.cfg.n_decoder_layers  # the step read w + 1 keys per layer
    assert torch.allclose(cached, full, atol=1e-4, rtol=1e-4)


def test_dense_cache_grows_with_the_context_and_local_does_not():
    sizes = {}
    for strategy in ({"name": "dense"}, {"name": "local", "window": 8}):
        for S in (64, 200):
            model = model_of(strategy)
            with torch.no_grad():
                _, state = prefill(model, context(1, S), S + 1)
            sizes[strategy["name"], S] = held_bytes(state.cache)
    assert sizes["dense", 64] == 2 * 2 * 65 * 64 * 4 and sizes["dense", 200] == 2 * 2 * 201 * 64 * 4
    assert sizes["local", 200] == sizes["local", 64] == 2 * 2 * 9 * 64 * 4


@pytest.mark.parametrize("strategy", PATTERNS, ids=lambda s: s["name"])
def test_decode_step_flops_equal_what_the_step_computes(strategy):
    model, (B, c) = model_of(strategy, ops="eager"), (2, 90)
    with torch.no_grad():
        logits, state = prefill(model, context(B, c), c + 1)
        with FlopCounterMode(display=False) as counter:
            decode_step(model, logits.argmax(-1), state)
    assert counter.get_total_flops() == decode_step_flops(model.cfg, B, c)


def test_ring_caches_take_one_token_at_a_time_after_the_prompt():
    cache = KVCache(50, CachePolicy(keep=5))
    kv = torch.zeros(1, 1, 3, 2)
    cache.append(kv, kv)
    with pytest.raises(ValueError, match="one token at a time"):
        cache.append(kv, kv)
    with pytest.raises(ValueError, match="multiple of stride"):
        CachePolicy(keep=5, stride=2)


def test_a_pattern_without_a_policy_keeps_every_key_and_masks_each_step():
    """The fallback of ``AttentionStrategy.cache_policy() -> None``: correct, not lean."""
    cache = KVCache(10, None)
    k = torch.arange(4.0).view(1, 1, 4, 1)
    assert cache.append(k, k)[2:] == (0, False)  # the prompt: its own keys, the pattern's mask
    k_all, _, offset, exact = cache.append(torch.full((1, 1, 1, 1), 9.0), torch.zeros(1, 1, 1, 1))
    assert (offset, exact) == (4, False) and k_all.flatten().tolist() == [0, 1, 2, 3, 9]
    assert cache.slots == 10 and cache.nbytes == 2 * 10 * 4
