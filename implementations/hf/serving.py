"""Serving a ``transformers`` model with its own cache (the protocol of ``implementations.serving``).

``prefill``: the prompt in one pass into a fresh ``DynamicCache`` (an encoder-decoder encodes
the source and runs its decoder start token, ``EncoderDecoderCache``), the LM head on the last
position only where the model takes ``logits_to_keep``. ``decode``: the cache filled with the
``context_len`` context, then each step feeds one token at position c and crops the cache back
to c (``Cache.crop``), so every step is the same. The attention of each step is tbench's pattern
over every cached key (masked by its rule, exact, O(S) a token): the model's cache keeps all
positions whatever the pattern, so ``kv_cache_slots`` is c + 1 and one step reads all of them.
``kv_cache_bytes`` are the bytes the self-attention cache's tensors hold during a step (c + 1
positions), ``kv_cache_analytic_bytes`` layers x 2 x B x H_kv x (c + 1) x D x element size; an
encoder-decoder's cross-attention cache is ``memory_read_bytes``. ``generate``: the same steps
under tbench's greedy loop (``implementations.generate``: eos ends a row, token times kept).
"""
from __future__ import annotations

import inspect

import torch

from implementations.generate import _greedy
from implementations.serving import Decode


def _bytes(cache) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers
               for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
               if isinstance(t, torch.Tensor))


class HfServing:
    def __init__(self, model):
        self.model, self.hf, self.cfg = model, model.hf, model.cfg
        self.enc_dec = self.cfg.is_encoder_decoder
        self.last_only = "logits_to_keep" in inspect.signature(self.hf.forward).parameters

    def _new_cache(self):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cache = DynamicCache(config=self.hf.config)
        return EncoderDecoderCache(cache, DynamicCache(config=self.hf.config)) if self.enc_dec else cache

    def _memory(self, src, src_mask) -> dict:
        if not self.enc_dec:
            return {}
        return {"encoder_outputs": self.hf.get_encoder()(input_ids=src, attention_mask=src_mask),
                "attention_mask": src_mask}

    def _run(self, tokens, cache, memory: dict):
        """Logits ``(B, V)`` of the last of ``tokens (B, S)`` fed after what ``cache`` holds."""
        key = "decoder_input_ids" if self.enc_dec else "input_ids"
        extra = {"logits_to_keep": 1} if self.last_only else {}
        out = self.hf(**memory, **{key: tokens}, cache=cache, use_cache=True, **extra)
        return out.logits[:, -1]

    def _start(self, B: int, device):
        return torch.full((B, 1), self.cfg.bos_id, dtype=torch.long, device=device)

    def prefill(self, tokens, src_mask=None):
        memory = self._memory(tokens, src_mask)
        first = self._start(tokens.shape[0], tokens.device) if self.enc_dec else tokens
        return self._run(first, self._new_cache(), memory)

    def decode(self, tokens, context_len: int, src=None, src_mask=None) -> Decode:
        c, cache, memory = context_len, self._new_cache(), self._memory(src, src_mask)
        token = self._run(tokens, cache, memory).argmax(-1)[:, None]  # (B, 1)
        own = cache.self_attention_cache if self.enc_dec else cache

        def step():
            logits = self._run(token, cache, memory)
            own.crop(c - own.get_seq_length())  # back to c positions
            return logits

        self._run(token, cache, memory)  # one step, to read the cache at c + 1 positions
        held = _bytes(own)
        own.crop(c - own.get_seq_length())
        layer = own.layers[0]
        B, H, _, D = layer.keys.shape
        L, elem = len(own.layers), layer.keys.element_size()
        return Decode(step, {
            "kv_cache_bytes": held,
            "kv_cache_analytic_bytes": L * 2 * B * H * (c + 1) * D * elem,
            "kv_cache_slots": c + 1,
            "kv_read_step_bytes": L * 2 * B * H * (c + 1) * D * elem,
            "memory_read_bytes": _bytes(cache.cross_attention_cache) if self.enc_dec else 0,
        })

    def generate(self, tokens, new_tokens: int, src_mask=None, token_times=None):
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return _greedy(self._steps(tokens, src_mask), self.cfg, tokens.shape[0], new_tokens,
                               tokens.device, token_times)
        finally:
            self.model.train(was_training)

    def _steps(self, tokens, src_mask):
        cache, memory = self._new_cache(), self._memory(tokens, src_mask)
        first = self._start(tokens.shape[0], tokens.device) if self.enc_dec else tokens
        logits = self._run(first, cache, memory)
        while True:
            token = yield logits
            logits = self._run(token[:, None], cache, memory)
