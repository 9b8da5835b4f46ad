"""Serving a model: a prefill, a repeated cached decode step, greedy generation; tbench's own.

A model source's ``serving(model)`` returns an object with

    prefill(tokens (B, S), src_mask=None) -> logits (B, V) of the first new token
        (encoder-decoder: ``tokens`` is the source; the decoder runs its start token)
    decode(tokens (B, c), context_len c, src=None, src_mask=None, dtype) -> Decode
        caches filled with c positions (encoder-decoder: the target context, the source
        encoded), then ``Decode.step()`` feeds one token at position c and rewinds to c, so every
        call is the same step; ``Decode.report``: the cache's bytes (DESIGN.md's kv_* metrics)
    generate(tokens, new_tokens, src_mask=None, token_times=None) -> (B, T) generated tokens

all under the caller's ``no_grad`` / autocast. :class:`TransformerServing` is tbench's
Transformer's: its per-layer :class:`~implementations.kv_cache.KVCache`, which keeps only the
keys the attention pattern's decode step reads (``strategy.cache_policy()``); the caches are
allocated on their own before they are filled, so their bytes are measured
(``kv_cache_bytes``: the allocator's delta on CUDA; on CPU ``held_bytes`` of the filled caches),
beside the pattern's analytic count (``kv_cache_analytic_bytes``: layers x 2 x B x H_kv x slots
x D x element size). ``kv_read_step_bytes`` is the K/V one step reads; ``memory_read_bytes``
the cross-attention K/V of an encoder-decoder's memory. ``transformers`` models serve with their
own cache (``implementations.hf.serving``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from implementations.generate import decode_step, generate, prefill
from implementations.kv_cache import held_bytes

DECODE_FILL_CHUNK = 1024  # positions per pass when filling a cache that keeps all of them


@dataclass
class Decode:
    step: Callable[[], torch.Tensor]  # one token at position c, then back to c: logits (B, V)
    report: dict = field(default_factory=dict)  # kv_cache_bytes, ..., memory_read_bytes


def allocated(device) -> int:
    device = str(device)
    return torch.cuda.memory_allocated(device) if device.startswith("cuda") else 0


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


class TransformerServing:
    """Serving tbench's Transformer (``implementations.generate``), see the module docstring."""

    def __init__(self, model):
        self.model, self.cfg = model, model.cfg

    def prefill(self, tokens, src_mask=None):
        enc_dec = self.cfg.is_encoder_decoder
        logits, _ = prefill(self.model, tokens, (1 if enc_dec else tokens.shape[1]) + 1, src_mask)
        return logits

    def generate(self, tokens, new_tokens: int, src_mask=None, token_times=None):
        return generate(self.model, tokens, new_tokens, use_cache=True, token_times=token_times,
                        src_key_padding_mask=src_mask)

    def cache_dtype(self, device) -> torch.dtype:
        """The dtype K and V come out in (the caller's autocast and the compression decide)."""
        proj = self.model.decoder[0].self_attn.W_k
        return proj(torch.zeros(1, 1, self.cfg.d_model, device=device,
                                dtype=next(self.model.parameters()).dtype)).dtype

    def decode(self, tokens, context_len: int, src=None, src_mask=None) -> Decode:
        cfg, c, device = self.cfg, context_len, tokens.device
        B, H, D, L = tokens.shape[0], cfg.kv_heads, cfg.head_dim, cfg.n_decoder_layers
        caches = self.model.new_cache(c + 1)
        dtype = self.cache_dtype(device)
        before = allocated(device)
        for cache in caches:
            cache.allocate(B, H, D, dtype, device)
        sync(device)
        measured = allocated(device) - before  # CUDA: the caching allocator's delta
        policy, elem = caches[0].policy, torch.empty(0, dtype=dtype).element_size()
        if cfg.is_encoder_decoder:
            logits, state = prefill(self.model, src, c + 1, src_mask, tgt=tokens, cache=caches,
                                    chunk=DECODE_FILL_CHUNK)
        else:
            logits, state = prefill(self.model, tokens, c + 1, cache=caches, chunk=DECODE_FILL_CHUNK)
        token = logits.argmax(-1)  # (B,)
        del logits
        if not str(device).startswith("cuda"):  # no allocator counter: walk the filled caches
            measured = held_bytes(caches)
        reads = c + 1 if caches[0].masked else policy.reads(c, c + 1)

        def step():
            out = decode_step(self.model, token, state)
            state.rewind(c)
            return out

        return Decode(step, {
            "kv_cache_bytes": measured,
            "kv_cache_analytic_bytes": policy.cache_bytes(B, H, D, c + 1, L, elem),
            "kv_cache_slots": caches[0].slots,
            "kv_read_step_bytes": L * 2 * B * H * reads * D * elem,
            "memory_read_bytes": sum(k.numel() * k.element_size() * 2 for k, _ in state.memory_kv or []),
        })
