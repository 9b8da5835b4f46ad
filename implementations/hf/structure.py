"""What a ``transformers`` model is made of, found on the meta device (no memory, no weights).

    structure_of(fields_json) -> Structure      cached per config (canonical JSON of its fields)

The model is built from its config on the meta device with the recording attention
implementation (``implementations.hf.attention.RECORD``), and one probe forward runs on meta
tensors: a source of ``PROBE_SRC`` tokens and a target of ``PROBE_TGT`` (encoder-decoder), or a
sequence of ``PROBE_TGT`` (decoder-only). Every layer that calls the attention interface is
recorded, with what the call was. From that, and the module tree:

  * ``routes_attention``: at least one layer computed its attention through the interface (a
    model that does not cannot run tbench's patterns);
  * ``attention``: per attention layer (its module path), self or cross (a cross layer's
    queries have the target's length and its keys the source's), causal, and whether it adds a
    score bias (T5);
  * ``stacks``: the layers of the encoder and the decoder, in order: the ``nn.ModuleList``s whose
    blocks hold a recorded attention layer (a list under a path with "encoder" is the encoder's);
    per block its self-attention, cross-attention and FFN paths (the FFN: a child named
    ``mlp``, ``feed_forward`` or ``ffn``, else None: BART's fc1/fc2 sit in the block itself);
  * ``param_count``: the parameters, each once (a tied LM head counts once, as torch does);
  * ``linear_layers``: the ``nn.Linear`` modules outside the LM head.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

PROBE_SRC, PROBE_TGT = 5, 3  # different lengths: a cross-attention call has q_len != k_len
FFN_NAMES = ("mlp", "feed_forward", "ffn")


@dataclass(frozen=True)
class Block:
    path: str  # the block's module path
    self_attn: str | None
    cross_attn: str | None
    ffn: str | None


@dataclass(frozen=True)
class Structure:
    class_name: str  # the transformers model class
    encoder_decoder: bool
    param_count: int
    routes_attention: bool
    cross: frozenset  # module paths of cross-attention layers
    score_bias: bool  # some layer adds a position bias to its scores
    stacks: dict  # "encoder" | "decoder" -> tuple[Block, ...]
    linear_layers: int  # nn.Linear modules outside the LM head (what compression rewrites)


def model_class(fields: dict):
    """The transformers class with an LM head for these fields (causal or seq2seq)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = AutoConfig.for_model(**fields)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    return config, auto


def probe_inputs(encoder_decoder: bool, device) -> dict:
    import torch

    ids = torch.zeros(1, PROBE_SRC if encoder_decoder else PROBE_TGT, dtype=torch.long, device=device)
    # a mask of ones: without one, transformers looks for packed rows in the data (not on meta)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool)}
    if encoder_decoder:
        out["decoder_input_ids"] = torch.zeros(1, PROBE_TGT, dtype=torch.long, device=device)
    return out


@functools.lru_cache(maxsize=64)
def structure_of(fields_json: str) -> Structure:
    import torch

    from implementations.hf.attention import register_recorder

    fields = json.loads(fields_json)
    config, auto = model_class(fields)
    with torch.device("meta"):
        model = auto.from_config(config, attn_implementation=register_recorder(), dtype=torch.float32)
    calls: list = []
    with torch.no_grad():
        model(**probe_inputs(config.is_encoder_decoder, "meta"), use_cache=False, tbench_record=calls)
    names = {id(m): n for n, m in model.named_modules()}
    cross = frozenset(names[id(c.module)] for c in calls if c.q_len != c.k_len)
    attention = {names[id(c.module)] for c in calls}
    stacks = {"encoder": [], "decoder": []}
    for path, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList):
            continue
        blocks = [_block(f"{path}.{i}", b, attention, cross) for i, b in enumerate(module)]
        if blocks and all(b.self_attn or b.cross_attn for b in blocks):
            encoder = config.is_encoder_decoder and "encoder" in path.split(".")
            stacks["encoder" if encoder else "decoder"].extend(blocks)
    params = sum(p.numel() for p in model.parameters())  # unique tensors: tied weights once
    linears = sum(isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")
                  for n, m in model.named_modules())
    return Structure(type(model).__name__, bool(config.is_encoder_decoder), params, bool(calls),
                     cross, any(c.score_bias for c in calls),
                     {k: tuple(v) for k, v in stacks.items()}, linears)


def _block(path: str, block, attention: set, cross: frozenset) -> Block:
    inside = sorted(a for a in attention if a.startswith(path + "."))
    self_attn = next((a for a in inside if a not in cross), None)
    cross_attn = next((a for a in inside if a in cross), None)
    ffn = next((f"{path}.{n}" for n in FFN_NAMES if hasattr(block, n)), None)
    if ffn is None:
        ffn = next((f"{path}.{n}" for n, m in block.named_children() if "MLP" in type(m).__name__), None)
    return Block(path, self_attn, cross_attn, ffn)
