"""FLOPs of a ``transformers`` model, counted: ``torch.utils.flop_counter`` on a meta pass.

    forward_breakdown(cfg, batch, seq_len, tgt_len=None) -> ((part, FLOPs), ...)
    decode_step_flops(cfg, batch, context_len, src_len=None) -> int

The model is built on the meta device (no memory, no weights) with the recording attention
implementation (``implementations.hf.attention.RECORD``), which computes nothing and notes each
call; one forward runs on meta tensors under ``FlopCounterMode``, which counts every matrix
product the model makes (its projections, FFN, LM head: 2 FLOPs per multiply-add, the same
convention as ``implementations.flops``) by module. The attention core (q k^T and p v) is then
charged from the recorded calls the way tbench charges its own Transformer: a self-attention
layer the point's pattern's allowed pairs (``allowed_pairs(S, causal)`` plus ``scored_pairs``:
S(S+1)/2 per head for causal dense, where ``FlopCounterMode`` on the model's own SDPA call would
charge the full S x S), a cross-attention layer S_tgt x S_src. So MFU is comparable between
tbench's model and a transformers model, and a sparse pattern is charged only what it may attend.

Parts, with ``implementations.flops.analytic_breakdown``'s keys: ``<stack>.self_attn.proj``
(what the self-attention layers count: their projections), ``<stack>.self_attn.scores`` (the core,
from pairs), ``decoder.cross_attn.proj`` / ``.scores``, ``<stack>.ffn`` (the rest of each block:
the FFN), ``lm_head`` (the rest of the model: the head). A decode step is counted the same way:
the caches filled with ``context_len`` positions on meta, then one token per row counted, its
attention charged ``allowed_pairs(c + 1) - allowed_pairs(c)`` keys (the pattern's own rule).
"""
from __future__ import annotations

import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from implementations.hf import attention as hf_attention
from implementations.hf.structure import model_class


def _meta_model(cfg):
    config, auto = model_class(cfg.fields)
    with torch.device("meta"):
        return auto.from_config(config, attn_implementation=hf_attention.register_recorder(),
                                dtype=torch.float32)


def _core(cfg, call, cross: bool) -> int:
    """q k^T and p v of one recorded call, every head and row (module docstring)."""
    per = 2 * call.head_dim * call.heads * call.batch
    if cross:
        return 2 * per * call.q_len * call.k_len
    pattern = cfg.attention.in_self_attention(call.causal)
    S = call.k_len
    return per * (pattern.allowed_pairs(S, call.causal) + pattern.scored_pairs(S, call.causal))


def _counted(model, run) -> tuple[dict, list]:
    calls: list = []
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        run(calls)
    root = type(model).__name__
    by_module = {name.removeprefix(root + ".") if name != root else "": sum(ops.values())
                 for name, ops in counter.get_flop_counts().items() if name != "Global"}
    return by_module, calls


@functools.lru_cache(maxsize=256)
def forward_breakdown(cfg, batch: int, seq_len: int, tgt_len: int | None = None) -> tuple:
    model = _meta_model(cfg)
    names = {id(m): n for n, m in model.named_modules()}
    enc_dec = cfg.is_encoder_decoder
    ids = torch.zeros(batch, seq_len, dtype=torch.long, device="meta")
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool)}
    if enc_dec:
        inputs["decoder_input_ids"] = torch.zeros(batch, tgt_len or seq_len, dtype=torch.long,
                                                  device="meta")
    by_module, calls = _counted(model, lambda calls: model(**inputs, use_cache=False,
                                                           tbench_record=calls))
    out = {k: 0 for k in ("encoder.self_attn.proj", "encoder.self_attn.scores", "encoder.ffn",
                          "decoder.self_attn.proj", "decoder.self_attn.scores",
                          "decoder.cross_attn.proj", "decoder.cross_attn.scores", "decoder.ffn",
                          "lm_head")}
    cross = cfg.structure.cross
    for call in calls:
        path = names[id(call.module)]
        stack = "encoder" if any(path.startswith(b.path + ".")
                                 for b in cfg.structure.stacks["encoder"]) else "decoder"
        kind = "cross_attn" if path in cross else "self_attn"
        out[f"{stack}.{kind}.scores"] += _core(cfg, call, path in cross)
    in_blocks = 0
    for stack in ("encoder", "decoder"):
        for block in cfg.structure.stacks[stack]:
            total = by_module.get(block.path, 0)
            attn = 0
            for kind, path in (("self_attn", block.self_attn), ("cross_attn", block.cross_attn)):
                if path:
                    out[f"{stack}.{kind}.proj"] += by_module.get(path, 0)
                    attn += by_module.get(path, 0)
            out[f"{stack}.ffn"] += total - attn
            in_blocks += total
    out["lm_head"] = by_module.get("", 0) - in_blocks
    return tuple(out.items())


@functools.lru_cache(maxsize=256)
def decode_step_flops(cfg, batch: int, context_len: int, src_len: int | None = None) -> int:
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    model = _meta_model(cfg)
    names = {id(m): n for n, m in model.named_modules()}
    c, enc_dec = context_len, cfg.is_encoder_decoder
    cache = DynamicCache(config=model.config)
    memory = {}
    with torch.no_grad():
        if enc_dec:  # the source is encoded once, before the step (as serving does)
            cache = EncoderDecoderCache(cache, DynamicCache(config=model.config))
            src = torch.zeros(batch, src_len or 1, dtype=torch.long, device="meta")
            mask = torch.ones_like(src, dtype=torch.bool)
            memory = {"encoder_outputs": model.get_encoder()(input_ids=src, attention_mask=mask,
                                                             tbench_record=[]),
                      "attention_mask": mask}
        context = torch.zeros(batch, max(c, 1), dtype=torch.long, device="meta")
        key = "decoder_input_ids" if enc_dec else "input_ids"

        def call(tokens, calls):
            return model(**memory, **{key: tokens}, cache=cache, use_cache=True, tbench_record=calls)

        if c:
            call(context, [])
    by_module, calls = _counted(model, lambda calls: call(context[:, :1], calls))
    total = by_module.get("", 0)
    pattern = cfg.attention.in_self_attention(True)
    for rec in calls:
        per = 2 * rec.head_dim * rec.heads * rec.batch
        if names[id(rec.module)] in cfg.structure.cross:  # one query over the memory
            total += 2 * per * rec.k_len
            continue
        keys = pattern.allowed_pairs(c + 1, True) - pattern.allowed_pairs(c, True) if c else 1
        scored = pattern.scored_pairs(c + 1, True) - pattern.scored_pairs(c, True) if c else 1
        total += per * (keys + scored)
    return total
