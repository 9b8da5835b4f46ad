"""Greedy autoregressive decoding, with or without a KV cache, and its two phases on their own.

    generate(model, src_or_prompt, max_new_tokens, use_cache=True, src_key_padding_mask=None,
             token_times=None) -> (B, T) long, the generated tokens only (T <= max_new_tokens)
    prefill(model, src_or_prompt, max_len, src_key_padding_mask=None, tgt=None, cache=None,
            chunk=None)
        -> (logits (B, V) of the next token, DecodeState)
    decode_step(model, token (B,), state) -> logits (B, V) of the token after it

Encoder-decoder: the source is encoded once, decoding starts from ``cfg.bos_id`` (or continues
``tgt``). Decoder-only: the prompt ``(B, P)`` (all real tokens, no padding) is continued.
A row stops at ``cfg.eos_id`` (it is emitted; the row is then filled with ``cfg.pad_id``);
decoding stops when every row has stopped or after ``max_new_tokens`` tokens.

With ``use_cache`` every decoder layer keeps its self-attention K/V (one
:class:`~implementations.kv_cache.KVCache`, holding only what the attention pattern's decode step
reads: ``strategy.cache_policy()``), the cross-attention K/V of the memory are computed once
(:func:`prefill`), and each step feeds one token (:func:`decode_step`): the cache hands it exactly
the keys it may attend. Only the last position goes through the LM head, as a serving engine
does: a ``(B, P, V)`` logits tensor of the prompt would be the largest tensor of a long prefill.
Without the cache every step recomputes the whole sequence (the reference the cache must
reproduce). ``token_times`` (a list) receives ``time.perf_counter_ns()`` right after each token
is chosen, once ``bool(finished.all())`` has waited for the device: TTFT and inter-token gaps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from implementations.kv_cache import KVCache
from implementations.model import EncoderDecoder, Transformer


@dataclass
class DecodeState:
    """What decoding carries between steps: the per-layer caches and, for an encoder-decoder,
    the per-layer cross-attention K/V of the memory and the source padding mask."""

    cache: list[KVCache]
    memory_kv: list | None = None
    src_mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Positions decoded so far: the absolute position of the next token."""
        return self.cache[0].length

    def rewind(self, length: int) -> None:
        """Forget every position from ``length`` on (a benchmark repeating one step)."""
        for c in self.cache:
            c.length = length


def generate(model: Transformer, src_or_prompt: torch.Tensor, max_new_tokens: int,
             use_cache: bool = True, src_key_padding_mask: torch.Tensor | None = None,
             token_times: list | None = None) -> torch.Tensor:
    """Greedy decoding (in eval mode, without gradients); see the module docstring."""
    cfg = model.cfg
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(model, EncoderDecoder):
                step = _encoder_decoder_steps(model, src_or_prompt, max_new_tokens, use_cache,
                                              src_key_padding_mask)
            else:
                if src_key_padding_mask is not None:
                    raise ValueError("src_key_padding_mask is for encoder-decoder models; a "
                                     "decoder-only prompt must be unpadded")
                step = _decoder_only_steps(model, src_or_prompt, max_new_tokens, use_cache)
            return _greedy(step, cfg, src_or_prompt.shape[0], max_new_tokens, src_or_prompt.device,
                           token_times)
    finally:
        model.train(was_training)


def prefill(model: Transformer, src_or_prompt: torch.Tensor, max_len: int,
            src_key_padding_mask: torch.Tensor | None = None, tgt: torch.Tensor | None = None,
            cache: list[KVCache] | None = None, chunk: int | None = None):
    """Fill fresh caches for ``max_len`` positions (or the empty ``cache`` given, one per decoder
    layer, e.g. allocated beforehand to measure it); the logits ``(B, V)`` of the next token.
    ``chunk``: feed at most this many positions per pass when every cache keeps all positions
    (dense: bounds eager attention's ``(chunk, S)`` scores on a long context); a ring cache takes
    the prompt in one pass (its pattern's self-attention is O(S * keys) anyway).

    Decoder-only: ``src_or_prompt`` is the prompt ``(B, P)``. Encoder-decoder: it is the source,
    encoded once (its cross-attention K/V projected once per layer), and the decoder runs ``tgt``
    ``(B, T)`` (default: the start token). Call under ``torch.no_grad()`` in eval mode."""
    cfg = model.cfg
    state = DecodeState(model.new_cache(max_len) if cache is None else cache)
    if isinstance(model, EncoderDecoder):
        memory = model.encode(src_or_prompt, src_key_padding_mask)  # (B, S_src, C)
        state.memory_kv, state.src_mask = model.project_memory(memory), src_key_padding_mask
        if tgt is None:
            tgt = torch.full((src_or_prompt.shape[0], 1), cfg.bos_id, dtype=torch.long,
                             device=src_or_prompt.device)
    else:
        if src_key_padding_mask is not None or tgt is not None:
            raise ValueError("a decoder-only prefill takes the prompt only (no mask, no tgt)")
        tgt = src_or_prompt
    T = tgt.shape[1]
    if chunk is None or T <= chunk or any(c.policy.keep is not None for c in state.cache):
        return _last_logits(model, tgt, state), state
    for start in range(0, T, chunk):
        logits = _last_logits(model, tgt[:, start:start + chunk], state)
    return logits, state


def decode_step(model: Transformer, token: torch.Tensor, state: DecodeState) -> torch.Tensor:
    """Feed ``token (B,)`` at position ``state.length``; the logits ``(B, V)`` of the next one."""
    return _last_logits(model, token[:, None], state)


def _last_logits(model: Transformer, tokens: torch.Tensor, state: DecodeState) -> torch.Tensor:
    """The decoder stack over ``tokens (B, S)`` continuing the cached ones, with the LM head on
    the last position only: ``(B, V)``. Mirrors ``DecoderOnly.forward`` / ``EncoderDecoder.decode``."""
    x, pos = model.embed(tokens, None, state.length)  # (B, S, C)
    for i, block in enumerate(model.decoder):
        x = block(x, position_ids=pos, memory_mask=state.src_mask, cache=state.cache[i],
                  memory_kv=state.memory_kv[i] if state.memory_kv else None)
    return model.head(x[:, -1:])[:, 0]  # (B, V)


def _greedy(step, cfg, B: int, max_new_tokens: int, device, token_times: list | None) -> torch.Tensor:
    """Drive ``step`` (a generator: yields logits ``(B, V)`` of the next token, receives the
    chosen tokens ``(B,)``) for up to ``max_new_tokens`` tokens."""
    out = []
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    logits = next(step)
    for t in range(max_new_tokens):
        token = logits.argmax(-1)  # (B,)
        token = token.masked_fill(finished, cfg.pad_id)
        out.append(token)
        finished |= token == cfg.eos_id
        done = bool(finished.all())  # waits for the device: the token exists now
        if token_times is not None:
            token_times.append(time.perf_counter_ns())
        if done or t == max_new_tokens - 1:
            break
        logits = step.send(token)
    step.close()
    return torch.stack(out, dim=1)  # (B, T)


def _check_len(cfg, n: int, what: str) -> None:
    if n > cfg.max_seq_len:
        raise ValueError(f"{what} needs {n} positions; max_seq_len is {cfg.max_seq_len}")


def _encoder_decoder_steps(model, src, max_new_tokens, use_cache, src_mask):
    _check_len(model.cfg, max_new_tokens, "decoding max_new_tokens tokens (start token included)")
    if use_cache:
        logits, state = prefill(model, src, max_new_tokens, src_mask)
        while True:  # one token per step: S_q = 1 at q_offset = cache length
            token = yield logits
            logits = decode_step(model, token, state)
    memory = model.encode(src, src_mask)  # (B, S_src, C)
    tgt = torch.full((src.shape[0], 1), model.cfg.bos_id, dtype=torch.long, device=src.device)
    while True:
        token = yield model.decode(tgt, memory, src_mask)[:, -1]  # (B, V)
        tgt = torch.cat([tgt, token[:, None]], dim=1)  # (B, T + 1)


def _decoder_only_steps(model, prompt, max_new_tokens, use_cache):
    total = prompt.shape[1] + max_new_tokens - 1  # the last token is never fed back
    _check_len(model.cfg, total, f"a prompt of {prompt.shape[1]} plus {max_new_tokens} new tokens")
    if use_cache:
        logits, state = prefill(model, prompt, total)  # the prompt in one pass
        while True:
            token = yield logits
            logits = decode_step(model, token, state)
    seq = prompt
    while True:
        token = yield model(seq)[:, -1]  # (B, V)
        seq = torch.cat([seq, token[:, None]], dim=1)  # (B, S + 1)
