"""A ``transformers`` model as a model source (``implementations.source``), and the built model.

    cfg = HfModelConfig.from_spec(resolved)          # implementations.hf.config.resolve(...)
    model = cfg.with_strategies(attention, "fused").build()
    decoder-only:    model(tokens, key_padding_mask=None, segment_ids=None, position_ids=None) -> (B, S, V)
    encoder-decoder: model(src, tgt, src_key_padding_mask=None, tgt_key_padding_mask=None) -> (B, S_tgt, V)
    model.loss(logits, targets) -> scalar;  model.hf: the transformers model itself

The built model is tbench's calling convention around the transformers model (``HfLM``), so
every stage that drives tbench's Transformer (train steps, ZeRO, FSDP, loss parity, compression
quality) drives it unchanged: ``key_padding_mask`` goes in as the model's ``attention_mask``,
packed rows' ``position_ids`` as its own (they restart at 0 per sequence) and their
``segment_ids`` as ``tbench_segment_ids`` to tbench's attention; an encoder-decoder is taught
with ``decoder_input_ids = tgt``. The weights are the config's random initialisation from the
seeded RNG, or a local checkpoint's (``from_pretrained(..., local_files_only=True)``), always in
fp32 (the precision axis casts or autocasts). ``model.encoder`` / ``model.decoder`` list the
model's blocks (``implementations.hf.structure``) with ``self_attn``, ``cross_attn`` and ``ffn``
naming their parts, which is what activation checkpointing and FSDP walk.

What each axis can run on such a model is said up front by ``not_supported_reasons(point)``,
from the config and the meta-device structure, never by trying.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from implementations import registry
from implementations.hf import attention as hf_attention
from implementations.hf.config import Resolved, shape
from implementations.hf.structure import Structure, model_class, structure_of
from implementations.model import TokenModel


def _dense():
    return registry.create("attention", "dense")


@functools.lru_cache(maxsize=64)
def _shape(fields_json: str) -> dict:
    return shape(json.loads(fields_json))


@dataclass(frozen=True)
class HfModelConfig(TokenModel):
    """One transformers model: its config fields (canonical JSON), name, optional checkpoint
    folder, and the point's attention strategy and ops path."""

    fields_json: str  # the config's fields, model_type included (sorted-key JSON)
    name: str  # the model's name in records (hf:<name>)
    checkpoint: str | None = None  # a local folder whose weights are loaded; None: random
    attention: object = field(default_factory=_dense)
    ops: str = "fused"  # tbench's attention kernels: eager (matmul-softmax-matmul) or SDPA

    flops_method = "flop_counter"  # implementations.hf.counting

    @classmethod
    def from_spec(cls, resolved: Resolved) -> "HfModelConfig":
        return cls(json.dumps(resolved.fields, sort_keys=True), resolved.name, resolved.checkpoint)

    def spec(self) -> dict:
        """What a point stores (a valid ``model.hf``): the fields and the name, or a checkpoint
        folder and the name (its fields are its config.json's, read again)."""
        if self.checkpoint is not None:
            return {"checkpoint": self.checkpoint, "name": self.name}
        return dict(json.loads(self.fields_json), name=self.name)

    @property
    def label(self) -> str:
        return f"hf:{self.name}"

    @property
    def fields(self) -> dict:
        return json.loads(self.fields_json)

    @property
    def structure(self) -> Structure:
        return structure_of(self.fields_json)

    # --- shape (implementations.source) ---------------------------------------------------
    def shape(self) -> dict:
        return dict(_shape(self.fields_json))

    def __getattr__(self, name: str):  # d_model, n_heads, ... from the config's shape
        shaped = _shape(self.__dict__["fields_json"]) if "fields_json" in self.__dict__ else {}
        if name in shaped:
            return shaped[name]
        raise AttributeError(name)

    @property
    def is_encoder_decoder(self) -> bool:
        return self.structure.encoder_decoder

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def decoder_attention(self):
        return self.attention.in_self_attention(True)

    def with_strategies(self, attention, ops: str, max_seq_len: int | None = None) -> "HfModelConfig":
        return dataclasses.replace(self, attention=attention, ops=ops)  # positions are the config's

    # --- build ----------------------------------------------------------------------------
    def build(self) -> "HfLM":
        import os

        os.environ["HF_HUB_OFFLINE"] = "1"  # no download, ever
        name = hf_attention.register(self.attention, self.ops)
        config, auto = model_class(self.fields)
        if self.checkpoint is not None:
            hf = auto.from_pretrained(self.checkpoint, local_files_only=True, attn_implementation=name,
                                      dtype=torch.float32)
        else:
            hf = auto.from_config(config, attn_implementation=name, dtype=torch.float32)
        return (HfSeq2SeqLM if self.is_encoder_decoder else HfDecoderLM)(hf, self)

    def param_count(self, attention=None) -> int:
        return self.structure.param_count

    # --- FLOPs (implementations.hf.counting) ----------------------------------------------
    def flops_breakdown(self, batch: int, seq_len: int, tgt_len: int | None = None) -> dict[str, int]:
        from implementations.hf.counting import forward_breakdown

        return dict(forward_breakdown(self, batch, seq_len, tgt_len))

    def decode_step_flops(self, batch: int, context_len: int, src_len: int | None = None) -> int:
        from implementations.hf.counting import decode_step_flops

        return decode_step_flops(self, batch, context_len, src_len)

    # --- what each axis can run -----------------------------------------------------------
    def not_supported_reasons(self, point) -> list[str]:
        from implementations.hf.support import reasons

        return reasons(self, point)


class HfLM(nn.Module):
    """A transformers model in tbench's calling convention (module docstring)."""

    def __init__(self, hf, cfg: HfModelConfig):
        super().__init__()
        self.hf, self.cfg = hf, cfg
        modules = dict(hf.named_modules())
        for path in cfg.structure.cross:
            modules[path]._tbench_cross = True  # attention.attention_forward: dense over the memory
        self.encoder = [_parts(modules, b) for b in cfg.structure.stacks["encoder"]]  # plain lists:
        self.decoder = [_parts(modules, b) for b in cfg.structure.stacks["decoder"]]  # not registered

    loss = staticmethod(lambda logits, targets, ignore_index=-100: nn.functional.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=ignore_index))


def _parts(modules: dict, block) -> nn.Module:
    """The block module, with ``self_attn``, ``cross_attn`` and ``ffn`` naming its parts (plain
    attributes, so the module tree and its state dict stay the model's own)."""
    module = modules[block.path]
    for part, path in (("self_attn", block.self_attn), ("cross_attn", block.cross_attn),
                       ("ffn", block.ffn)):
        if part not in module._modules or modules.get(path) is not module._modules[part]:
            object.__setattr__(module, part, modules.get(path) if path else None)
    return module


class HfDecoderLM(HfLM):
    def forward(self, tokens, key_padding_mask=None, segment_ids=None, position_ids=None):
        """tokens ``(B, S)`` -> logits ``(B, S, V)``."""
        extra = {} if segment_ids is None else {"tbench_segment_ids": segment_ids}
        return self.hf(input_ids=tokens, attention_mask=key_padding_mask, position_ids=position_ids,
                       use_cache=False, **extra).logits


class HfSeq2SeqLM(HfLM):
    def forward(self, src, tgt, src_key_padding_mask=None, tgt_key_padding_mask=None):
        """src ``(B, S_src)``, tgt ``(B, S_tgt)`` -> logits ``(B, S_tgt, V)`` (teacher forcing)."""
        return self.hf(input_ids=src, attention_mask=src_key_padding_mask, decoder_input_ids=tgt,
                       decoder_attention_mask=tgt_key_padding_mask, use_cache=False).logits
