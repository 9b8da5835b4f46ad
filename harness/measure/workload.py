"""The measured work of one point, and what building it needs (``harness.measure.steps`` builds it).

A ``Workload`` has
  * ``step()``: one unit of measured work: ``train`` = forward + loss + backward + optimizer step;
    ``forward`` = inference forward under ``no_grad``; ``prefill`` = the prompt's pass filling
    the KV cache and the first token; ``decode`` = one cached token at ``context_len``;
    ``generate`` = greedy decode of ``workload.new_tokens`` tokens with the KV cache (batches
    cycle through ``num_batches``; see ``harness.measure.steps_inference``);
  * per-step counts (means over the cycled batches): ``sequences``, ``real_tokens``,
    ``processed_tokens`` (tokens; generate: new tokens produced; decode: one per row),
    ``flops`` (model FLOPs of ``implementations.flops`` on the processed shape; None for
    generate, whose steps stop at eos);
  * ``finish() -> dict`` of training or generation metrics (``loss_final``,
    ``amp_skipped_steps``; ``ttft_ms_p50``, ``itl_ms_p*``) and ``close()`` (undo the precision's
    process-wide flags); ``extra``: more metrics for the record (KV-cache bytes, compression
    quality, weight bytes); ``timed_steps``: how many of the last steps were timed.
``unsupported_reasons(point)`` gathers every strategy's ``not_supported_reasons(ctx)`` and the
model source's (``implementations.source``: what a transformers model or an nn.Module factory
cannot run, per axis); ``NotSupported`` is raised for combinations only the data reveals (packed
rows on an encoder-decoder; padded prompts for a decoder-only generate).

``model_config(point)`` is the point's model source with its attention strategy and ops path:
tbench's ``ModelConfig``, or a foreign source; everything below reads it through the source
protocol (``make_batches``, ``flops_breakdown`` through ``implementations.flops``), never by kind.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from harness.measure import telemetry
from implementations import registry
from implementations.flops import train_step_flops
from implementations.padding import sample_lengths
from implementations.parallel.state_bytes import peak_memory_bytes

LR = 1e-3


class NotSupported(Exception):
    """A combination that cannot run; the message is the reason."""


@dataclass
class Workload:
    step: Callable[[], None]
    sequences: float
    real_tokens: float
    processed_tokens: float
    flops: float | None
    finish: Callable[[], dict] = lambda: {}
    close: Callable[[], None] = lambda: None
    model: Any = None
    extra: dict = field(default_factory=dict)
    cfg: Any = None  # the model source the point runs (model_config, built once)
    flops_palm: float | None = None  # the same step in the published (S^2) convention
    batches_per_cycle: int = 1  # distinct batches the steps go through in turn: warm-up covers them all
    timed_steps: int = 0  # set after sampling: the last this many steps were the timed ones


def nproc_of(point) -> int:
    return int(getattr(point.strategies.parallel, "nproc", 1) or 1)


def context(point) -> registry.Context:
    """What the strategies need to know, answered without a CUDA context: device count and
    compute capability come from NVML (the runner process must never initialise CUDA)."""
    cap = None
    if point.device == "cuda":
        # torch's device count needs no context either; it covers a machine without NVML
        max_nproc = telemetry.gpu_count() or torch.cuda.device_count()
        cap = telemetry.device_info(0).get("compute_capability")
    else:
        max_nproc = os.cpu_count() or 1
    return registry.Context(device=point.device, precision=point.strategies.precision.label,
                            nproc=nproc_of(point), max_nproc=max_nproc, workload=point.workload.kind,
                            gpu_capability=tuple(cap) if cap else None,
                            decoder_only=point.model.resolved()["n_encoder_layers"] == 0)


def unsupported_reasons(point) -> list[str]:
    ctx = context(point)
    reasons = []
    for axis in registry.AXES:
        strategy = getattr(point.strategies, axis)
        reasons += [f"{axis} {strategy.label}: {r}" for r in strategy.not_supported_reasons(ctx)]
    return reasons + point.model.source.not_supported_reasons(point)


def model_config(point):
    """The point's model source, as the point runs it (its attention strategy and ops path).
    Built once per worker (``steps.build``, kept as ``Workload.cfg``); the positions it needs
    were checked when the point was made (``Point.positions_needed``)."""
    return point.model.source.with_strategies(point.strategies.attention,
                                              point.strategies.ops.model_ops)


def make_batches(point, cfg, device: str) -> tuple[list, int]:
    """The point's distinct batches on ``device`` and the number of sequences they hold."""
    w = point.workload
    n = w.batch_size * w.num_batches
    spec = w.lengths.model_dump(exclude_none=True) if w.lengths is not None else None
    lengths = sample_lengths(spec, n, point.seed, w.seq_len)
    batches = cfg.make_batches(point.strategies.padding, lengths, w.batch_size, w.seq_len, point.seed)
    if cfg.is_encoder_decoder and any(b.segment_ids is not None for b in batches):
        raise NotSupported("packed rows (segment ids) need a decoder-only model")
    return [b.to(device) for b in batches], n


def mean_flops(fn, cfg, batches) -> float | None:
    """Mean over batches of ``fn`` on each batch's processed shape (padding is charged); None
    where ``fn`` cannot count the source."""
    per = [fn(cfg, int(b.tokens.shape[0]), int(b.tokens.shape[1])) for b in batches]
    return None if None in per else sum(per) / len(per)


def cycle(batches):
    """A callable returning the batches in turn, forever."""
    state = {"i": 0}

    def next_batch():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        return batch

    return next_batch


def rank_workload(cfg, batches, rank: int, device: str, first, later, skipped) -> Workload:
    """The ``Workload`` of one rank of a multi-rank training point (ZeRO or FSDP).

    ``first(batch) -> (loss, model-state bytes)`` runs the first step and reads the bytes around
    it; ``later(batch) -> loss`` every other step; ``skipped() -> int`` the steps the loss scaler
    skipped. Each rank starts at a different batch, so ranks see different data."""
    order = batches[rank % len(batches):] + batches[:rank % len(batches)]
    state = {"i": 0, "loss": None, "bytes": None}

    def step():
        batch = order[state["i"] % len(order)]
        state["i"] += 1
        if state["bytes"] is None:
            state["loss"], state["bytes"] = first(batch)
        else:
            state["loss"] = later(batch)

    wl = Workload(step, 0, 0, 0, mean_flops(train_step_flops, cfg, batches))

    def finish() -> dict:
        wl.extra["rank_metrics"] = {"rank": rank,
                                    "mem_peak_bytes": peak_memory_bytes(device.split(":")[0]),
                                    **(state["bytes"] or {})}
        return {"loss_final": state["loss"], "amp_skipped_steps": skipped()}

    wl.finish = finish
    return wl
