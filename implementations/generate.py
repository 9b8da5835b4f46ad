"""Greedy autoregressive decoding, with or without a KV cache.

    generate(model, src_or_prompt, max_new_tokens, use_cache=True, src_key_padding_mask=None)
        -> (B, T) long, the generated tokens only (T <= max_new_tokens)

Encoder-decoder: the source is encoded once, decoding starts from ``cfg.bos_id``.
Decoder-only: the prompt ``(B, P)`` (all real tokens, no padding) is continued.
A row stops at ``cfg.eos_id`` (it is emitted; the row is then filled with ``cfg.pad_id``);
decoding stops when every row has stopped or after ``max_new_tokens`` tokens.

With ``use_cache`` every decoder layer keeps its self-attention K/V (one
:class:`~implementations.layers.KVCache`), the cross-attention K/V of the memory are computed
once, and each step feeds one token: ``attend`` sees ``S_q = 1`` and ``q_offset`` = its position.
Without it every step recomputes the whole sequence (the reference the cache must reproduce).
"""
from __future__ import annotations

import torch

from implementations.model import EncoderDecoder, Transformer


def generate(model: Transformer, src_or_prompt: torch.Tensor, max_new_tokens: int,
             use_cache: bool = True, src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
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
            return _greedy(step, cfg, src_or_prompt.shape[0], max_new_tokens, src_or_prompt.device)
    finally:
        model.train(was_training)


def _greedy(step, cfg, B: int, max_new_tokens: int, device) -> torch.Tensor:
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
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        logits = step.send(token)
    step.close()
    return torch.stack(out, dim=1)  # (B, T)


def _check_len(cfg, n: int, what: str) -> None:
    if n > cfg.max_seq_len:
        raise ValueError(f"{what} needs {n} positions; max_seq_len is {cfg.max_seq_len}")


def _encoder_decoder_steps(model, src, max_new_tokens, use_cache, src_mask):
    _check_len(model.cfg, max_new_tokens, "decoding max_new_tokens tokens (start token included)")
    memory = model.encode(src, src_mask)  # (B, S_src, C)
    tgt = torch.full((src.shape[0], 1), model.cfg.bos_id, dtype=torch.long, device=src.device)
    if use_cache:
        cache, memory_kv = model.new_cache(max_new_tokens), model.project_memory(memory)
        token = yield model.decode(tgt, src_key_padding_mask=src_mask, cache=cache,
                                   memory_kv=memory_kv)[:, -1]
        while True:  # one token per step: S_q = 1 at q_offset = cache length
            token = yield model.decode(token[:, None], src_key_padding_mask=src_mask, cache=cache,
                                       memory_kv=memory_kv)[:, -1]
    while True:
        token = yield model.decode(tgt, memory, src_mask)[:, -1]  # (B, V)
        tgt = torch.cat([tgt, token[:, None]], dim=1)  # (B, T + 1)


def _decoder_only_steps(model, prompt, max_new_tokens, use_cache):
    total = prompt.shape[1] + max_new_tokens - 1  # the last token is never fed back
    _check_len(model.cfg, total, f"a prompt of {prompt.shape[1]} plus {max_new_tokens} new tokens")
    if use_cache:
        cache = model.new_cache(total)
        token = yield model(prompt, cache=cache)[:, -1]  # prefill: the prompt in one pass
        while True:
            token = yield model(token[:, None], cache=cache)[:, -1]
    seq = prompt
    while True:
        token = yield model(seq)[:, -1]  # (B, V)
        seq = torch.cat([seq, token[:, None]], dim=1)  # (B, S + 1)
