"""Any ``nn.Module`` as a model source: ``model: {module: "package.module:factory", kwargs: {...}}``.

``factory(**kwargs)`` returns the model, which declares its inputs and its loss (the protocol):

    model.tbench_inputs(batch_size: int, seq_len: int, seed: int) -> dict[str, Tensor]
        one batch of ``model(**inputs)`` keyword arguments, on the CPU (tbench moves them), the
        same for the same seed
    model.tbench_loss(output, inputs) -> scalar Tensor        what a train step backpropagates

A step is ``model(**inputs)`` (forward, under ``no_grad``) or that and ``tbench_loss`` (train:
backward and the ops axis' AdamW). FLOPs are ``torch.utils.flop_counter``'s on a meta pass
(the factory called under the meta device), attention as the module computes it (the flop
counter charges SDPA its full S x S: a module's attention is opaque); parameters from the
module. What cannot apply to an opaque module is ``not_supported`` with the reason: attention
patterns and padding (its inputs are its own), parallel (ZeRO and FSDP drive tbench's calling
convention), checkpointing and compression (which module is a block or a projection is the
module's business), the serving workloads (no cache protocol), and loss parity.
"""
from __future__ import annotations

import functools
import importlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from implementations import registry

TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ModuleSpecError(ValueError):
    """A ``model.module`` that cannot be a model source; the message says what is allowed."""


def _dense():
    return registry.create("attention", "dense")


def load_factory(target: str):
    if not isinstance(target, str) or not TARGET.match(target):
        raise ModuleSpecError(f"got {target!r:.80}, allowed: 'package.module:factory'")
    name, attr = target.split(":")
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 -- whatever the user's module raises on import
        raise ModuleSpecError(f"got {target!r}: module {name!r} does not import ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); allowed: an "
                              "importable 'package.module:factory'") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModuleSpecError(f"got {target!r}: {name} has no callable {attr!r}; allowed: a "
                              "factory returning an nn.Module")
    return factory


@dataclass(frozen=True)
class ModuleModelConfig:
    target: str  # "package.module:factory"
    kwargs_json: str = "{}"  # the factory's keyword arguments (sorted-key JSON)
    attention: object = field(default_factory=_dense)
    ops: str = "fused"

    flops_method = "flop_counter"
    is_encoder_decoder = False
    n_encoder_layers = n_decoder_layers = 0  # no stack tbench can see: no attention products
    n_heads = kv_heads = 1

    @classmethod
    def from_spec(cls, target, kwargs: dict[str, Any]) -> "ModuleModelConfig":
        load_factory(target)
        try:
            return cls(target, json.dumps(kwargs, sort_keys=True))
        except TypeError as exc:
            raise ModuleSpecError(f"kwargs: {exc}; allowed: YAML values") from None

    @property
    def label(self) -> str:
        return f"module:{self.target}"

    def spec(self) -> str:
        return self.target

    @property
    def kwargs(self) -> dict:
        return json.loads(self.kwargs_json)

    def shape(self) -> dict:
        """No shape tbench can read: the memory model predicts its states only."""
        return {"max_seq_len": 1 << 30, "n_encoder_layers": 0, "n_decoder_layers": 0,
                "d_model": None, "vocab_size": None}

    def with_strategies(self, attention, ops: str, max_seq_len: int | None = None):
        import dataclasses

        return dataclasses.replace(self, attention=attention, ops=ops)

    def build(self):
        model = load_factory(self.target)(**self.kwargs)
        for method in ("tbench_inputs", "tbench_loss"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"{self.target} returned a {type(model).__name__} without "
                                f"{method}(); a module source declares tbench_inputs(batch_size, "
                                "seq_len, seed) and tbench_loss(output, inputs)")
        return model

    def make_batches(self, padding, lengths, batch_size: int, seq_len: int, seed: int) -> list:
        import torch

        n = max(1, len(lengths) // batch_size)
        with torch.device("meta"):
            model = self.build()
        return [ModuleBatch(model.tbench_inputs(batch_size, seq_len, seed + i), batch_size * seq_len)
                for i in range(n)]

    def run_batch(self, model, batch):
        return model(**batch.inputs)

    def batch_loss(self, model, output, batch):
        return model.tbench_loss(output, batch.inputs)

    def flops_breakdown(self, batch: int, seq_len: int, tgt_len: int | None = None) -> dict:
        return {"lm_head": 0, "decoder.ffn": _counted(self, batch, seq_len)}  # one opaque part

    def decode_step_flops(self, batch: int, context_len: int, src_len: int | None = None) -> int:
        raise NotImplementedError("a module source has no decode step")

    def param_count(self, attention=None) -> int:
        import torch

        with torch.device("meta"):
            return sum(p.numel() for p in self.build().parameters())

    def not_supported_reasons(self, point) -> list[str]:
        s, w = point.strategies, point.workload
        opaque = "a module source's model is opaque to it"
        out = []
        if w.kind not in ("train", "forward"):
            out.append(f"workload {w.kind}: a module source declares no cache (train and forward only)")
        if w.parity_steps:
            out.append("workload parity_steps: loss parity needs tokens and targets; a module "
                       "source has its own inputs")
        checks = (("attention", s.attention.label != "dense", "its attention is the module's own"),
                  ("padding", s.padding.name != "fixed", "its inputs are its own"),
                  ("parallel", s.parallel.distributed, "ZeRO and FSDP drive tbench's calling convention"),
                  ("memory", s.memory.recomputes, opaque), ("compression", not s.compression.identity, opaque))
        out += [f"{axis} {getattr(s, axis).label}: {why}" for axis, bad, why in checks if bad]
        return out

    def serving(self, model):
        raise NotImplementedError("a module source has no serving protocol")


@dataclass
class ModuleBatch:
    """One batch of a module source: the forward's keyword arguments."""

    inputs: dict
    processed_tokens: int  # batch_size x seq_len: what tokens_per_s divides
    real_tokens: int = 0
    segment_ids: Any = None
    key_padding_mask: Any = None

    def __post_init__(self):
        self.real_tokens = self.real_tokens or self.processed_tokens

    @property
    def tokens(self):
        return next(iter(self.inputs.values()))

    def to(self, device) -> "ModuleBatch":
        moved = {k: v.to(device) if hasattr(v, "to") else v for k, v in self.inputs.items()}
        return ModuleBatch(moved, self.processed_tokens, self.real_tokens)


@functools.lru_cache(maxsize=64)
def _counted(cfg: ModuleModelConfig, batch: int, seq_len: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = cfg.build()
    inputs = {k: v.to("meta") if hasattr(v, "to") else v
              for k, v in model.tbench_inputs(batch, seq_len, 0).items()}
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**inputs)
    return counter.get_total_flops()
