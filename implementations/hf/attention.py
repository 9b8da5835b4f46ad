"""tbench's attention strategies inside a ``transformers`` model, through its AttentionInterface.

    name = register(strategy, ops)   # "tbench_<label>_<ops>", registered once per process
    model.config._attn_implementation = name   (or from_config(..., attn_implementation=name))

transformers calls ``fn(module, query, key, value, attention_mask, scaling=, dropout=, **kwargs)``
from every attention layer of a model that routes attention through ``ALL_ATTENTION_FUNCTIONS``,
with query ``(B, H, S_q, D)`` and key, value ``(B, H_kv, S_k, D)`` (after RoPE and the cache
update), and expects ``((B, S_q, H, D), weights | None)``. What the call means, read from the
model, never guessed from shapes:

  * causal: the layer's own ``module.is_causal``; a layer found to be cross-attention (its
    queries and keys come from different sequences: ``module._tbench_cross``, set when the model
    is built, from a probe pass with source and target of different lengths) is dense over the
    memory, like tbench's own cross-attention: the pattern is a self-attention pattern;
  * key padding: the model's 2D ``attention_mask`` (True = real token, (B, S_k), covering the
    cached keys too). ``register`` also registers a mask function under the same name in
    ``AttentionMaskInterface`` that hands that 2D mask through unchanged, so no S x S mask is
    ever built for a sparse pattern;
  * packed rows: ``tbench_segment_ids`` (B, S), passed by the caller as a model keyword (models
    forward their keyword arguments to the attention function);
  * GQA: the model's K/V heads as they come (the kernels read or repeat them);
  * a cached decode step: queries are the last ``S_q`` of the ``S_k`` positions
    (``q_offset = S_k - S_q``), the pattern's rule then masks the cache (exact, O(S) a token).

A call tbench's kernels cannot compute exactly raises ``KernelNotSupported`` (recorded
``not_supported``, never run another way): a score bias (T5's relative ``position_bias``,
ALiBi), attention dropout while training, logit soft-capping, a sliding window of the model's
own. ``scaling`` other than ``D ** -0.5`` is applied exactly, by scaling the queries.

``RECORD`` is a second implementation that computes nothing: it appends what each call was
(layer, lengths, heads, causal, cross) to the list passed as ``tbench_record`` and returns
zeros; the probe pass and the FLOP count (``implementations.hf.counting``) run on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from implementations.attention.grid import KernelNotSupported

RECORD = "tbench_record"
_REGISTERED: set[str] = set()


@dataclass(frozen=True)
class Call:
    """One attention call seen by :data:`RECORD` (per layer and forward)."""

    module: object  # the attention layer
    batch: int
    heads: int  # H (query heads)
    kv_heads: int
    head_dim: int
    q_len: int
    k_len: int
    causal: bool  # the layer's is_causal, as the model set it
    score_bias: bool  # a position bias added to the scores (T5)


def name_of(strategy, ops: str) -> str:
    return f"tbench_{strategy.label}_{ops}"


def register(strategy, ops: str) -> str:
    """Register ``strategy`` (computed with ``ops``: eager or fused) under its name; idempotent."""
    name = name_of(strategy, ops)
    if name not in _REGISTERED:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        def forward(module, query, key, value, attention_mask, **kwargs):
            return attention_forward(strategy, ops, module, query, key, value, attention_mask, **kwargs)

        AttentionInterface.register(name, forward)
        AttentionMaskInterface.register(name, padding_only_mask)
        _REGISTERED.add(name)
    return name


def register_recorder() -> str:
    if RECORD not in _REGISTERED:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(RECORD, record_forward)
        AttentionMaskInterface.register(RECORD, padding_only_mask)
        _REGISTERED.add(RECORD)
    return RECORD


def padding_only_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0,
                      kv_offset: int = 0, mask_function=None, attention_mask=None, **kwargs):
    """The model's 2D padding mask ``(B, kv_length)`` bool (True = real), or None where every key
    is real (so the unmasked kernels run, as the model's own sdpa skips its mask; checked once
    per forward here, not per layer): what :func:`attention_forward` reads as
    ``key_padding_mask``; causality is the layer's own."""
    if attention_mask is None or (attention_mask.device.type != "meta" and bool(attention_mask.all())):
        return None
    if attention_mask.shape[-1] != kv_length or kv_offset:
        raise KernelNotSupported(f"tbench attention: a key padding mask of {attention_mask.shape[-1]} "
                                 f"positions for {kv_length} keys (offset {kv_offset}): a cache "
                                 "that drops keys (sliding window) is not supported")
    return attention_mask.to(torch.bool)


def _refusals(module, dropout: float, keys: int, kwargs: dict) -> None:
    if kwargs.get("position_bias") is not None:
        raise KernelNotSupported(f"{type(module).__name__} adds a position bias to the scores (T5's "
                                 "relative attention bias): tbench's attention kernels add no bias")
    if kwargs.get("softcap"):
        raise KernelNotSupported(f"{type(module).__name__} soft-caps its attention logits: "
                                 "tbench's kernels do not")
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    if window and keys > window:
        raise KernelNotSupported(f"{type(module).__name__} attends within a sliding window of "
                                 f"{window} of its own, here over {keys} keys; a tbench pattern "
                                 "would replace it (use attention local)")
    if dropout:
        raise KernelNotSupported(f"attention dropout p={dropout} while training: tbench's kernels "
                                 "apply none (set the config's attention dropout to 0)")


def attention_forward(strategy, ops: str, module, query, key, value, attention_mask, *,
                      scaling: float | None = None, dropout: float = 0.0,
                      tbench_segment_ids=None, **kwargs):
    """One layer's attention by ``strategy``: ``(B, S_q, H, D)``, no weights (module docstring)."""
    D, S_q, S_k = query.shape[-1], query.shape[-2], key.shape[-2]
    _refusals(module, dropout, S_k, kwargs)
    if scaling is not None and abs(scaling * D ** 0.5 - 1.0) > 1e-12:
        query = query * (scaling * D ** 0.5)  # the kernels scale by D ** -0.5
    cross = bool(getattr(module, "_tbench_cross", False))
    causal = bool(getattr(module, "is_causal", False)) and not cross
    pattern = strategy.in_self_attention(causal) if not cross else _dense()
    mask = attention_mask
    if mask is not None and mask.dim() != 2:
        raise KernelNotSupported(f"tbench attention takes the model's 2D padding mask; got a "
                                 f"{mask.dim()}D mask (a custom 4D mask is the model's own pattern)")
    segments = tbench_segment_ids if not cross and S_q == S_k else None
    out = pattern.attend(query, key, value, causal=causal, key_padding_mask=mask,
                         segment_ids=segments, q_offset=S_k - S_q if causal else 0, ops=ops)
    return out.transpose(1, 2).contiguous(), None  # (B, H, S_q, D) -> (B, S_q, H, D)


def record_forward(module, query, key, value, attention_mask, *, tbench_record=None, **kwargs):
    """:data:`RECORD`'s implementation: note the call, compute nothing (zeros of the output's shape)."""
    B, H, S_q, D = query.shape
    if tbench_record is not None:
        tbench_record.append(Call(module, B, H, key.shape[1], D, S_q, key.shape[-2],
                                  bool(getattr(module, "is_causal", False)),
                                  kwargs.get("position_bias") is not None))
    return query.new_zeros(B, S_q, H, value.shape[-1]), None


def _dense():
    from implementations import registry

    return registry.create("attention", "dense")
