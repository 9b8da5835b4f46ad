"""The measured work of one point: model, data, precision, optimizer and a ``step()`` callable.

Input: a resolved ``Point`` and the torch device string it runs on ("cpu", "cuda:<i>").
Output: ``build(point, device) -> Workload`` with
  * ``step()``: one unit of measured work: ``train`` = forward + loss + backward + optimizer step;
    ``forward`` = inference forward under ``no_grad``; ``generate`` = greedy decode of
    ``workload.new_tokens`` tokens with the KV cache (batches cycle through ``num_batches``);
  * per-step counts (means over the cycled batches): ``sequences``, ``real_tokens``,
    ``processed_tokens`` (tokens; generate: new tokens produced), ``flops`` (model FLOPs of
    ``implementations.flops`` on the processed shape; None for generate, which has no analytic
    count with a KV cache);
  * ``finish() -> dict`` of training metrics (``loss_final``, ``amp_skipped_steps``) and
    ``close()`` (undo the precision's process-wide flags).
``unsupported_reasons(point)`` gathers every strategy's ``not_supported_reasons(ctx)``;
``build`` raises ``NotSupported`` for combinations only the data reveals (packed rows on an
encoder-decoder; padded prompts for a decoder-only generate).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from implementations import registry
from implementations.flops import forward_flops, train_step_flops
from implementations.generate import generate
from implementations.model import ModelConfig, build_model, forward_batch
from implementations.padding import sample_lengths

AXES = ("attention", "padding", "precision", "parallel", "ops")
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


def nproc_of(point) -> int:
    return int(getattr(point.strategies.parallel, "nproc", 1) or 1)


def context(point) -> registry.Context:
    max_nproc = torch.cuda.device_count() if point.device == "cuda" else (os.cpu_count() or 1)
    return registry.Context(device=point.device, dtype=point.strategies.precision.label,
                            nproc=nproc_of(point), max_nproc=max_nproc,
                            workload=point.workload.kind)


def unsupported_reasons(point) -> list[str]:
    ctx = context(point)
    reasons = []
    for axis in AXES:
        strategy = getattr(point.strategies, axis)
        if strategy is None:  # an axis with no strategy registered yet
            continue
        reasons += [f"{axis} {strategy.label}: {r}" for r in strategy.not_supported_reasons(ctx)]
    return reasons


def model_config(point) -> ModelConfig:
    overrides = dict(point.model.overrides)
    overrides["attention"] = point.strategies.attention
    overrides["ops"] = point.strategies.ops.model_ops
    cfg = ModelConfig.from_preset(point.model.preset, **overrides)
    w = point.workload
    needed = w.seq_len + (w.new_tokens if w.kind == "generate" else 0)
    if cfg.max_seq_len < needed and "max_seq_len" not in point.model.overrides:
        cfg = ModelConfig.from_preset(point.model.preset, **overrides, max_seq_len=needed)
    return cfg


def make_batches(point, cfg: ModelConfig, device: str) -> tuple[list, int]:
    """The point's distinct batches on ``device`` and the number of sequences they hold."""
    w = point.workload
    n = w.batch_size * w.num_batches
    spec = w.lengths.model_dump(exclude_none=True) if w.lengths is not None else None
    lengths = sample_lengths(spec, n, point.seed, w.seq_len)
    batches = point.strategies.padding.make_batches(
        lengths, w.batch_size, w.seq_len, cfg.vocab_size, point.seed, cfg.pad_id)
    if cfg.is_encoder_decoder and any(b.segment_ids is not None for b in batches):
        raise NotSupported("packed rows (segment ids) need a decoder-only model")
    return [b.to(device) for b in batches], n


def mean_flops(fn, cfg, batches) -> float:
    """Mean over batches of ``fn`` on each batch's processed shape (padding is charged)."""
    per = [fn(cfg, int(b.tokens.shape[0]), int(b.tokens.shape[1])) for b in batches]
    return sum(per) / len(per)


def _cycle(batches):
    state = {"i": 0}

    def next_batch():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        return batch

    return next_batch


def build(point, device: str) -> Workload:
    """Everything the point measures, built from the seeded state the worker set up."""
    cfg = model_config(point)
    batches, n_seq = make_batches(point, cfg, device)
    point.strategies.precision.setup(device)
    model = build_model(cfg).to(device)
    builders = {"train": _train, "forward": _forward, "generate": _generate}
    wl = builders[point.workload.kind](point, cfg, model, batches, device)
    wl.model = model
    close_precision = point.strategies.precision.teardown
    wl.close = close_precision
    if point.workload.kind != "generate":
        wl.sequences = n_seq / len(batches)
        wl.real_tokens = sum(b.real_tokens for b in batches) / len(batches)
        wl.processed_tokens = sum(b.processed_tokens for b in batches) / len(batches)
    return wl


def _train(point, cfg, model, batches, device) -> Workload:
    s = point.strategies
    if nproc_of(point) > 1 or getattr(s.parallel, "name", "none") != "none":
        from harness.workload_parallel import train_parallel

        return train_parallel(point, cfg, model, batches, device)
    model.train()
    optimizer = s.ops.make_optimizer(model.parameters(), LR)
    scaler = s.precision.make_scaler(device)
    run = s.ops.prepare(model)
    next_batch = _cycle(batches)
    state = {"loss": None, "skipped": 0}

    def step():
        batch = next_batch()
        with s.precision.autocast(device):
            loss = model.loss(forward_batch(run, batch, cfg.is_encoder_decoder), batch.targets)
        state["skipped"] += bool(s.precision.backward_step(loss, optimizer, scaler))
        state["loss"] = loss.detach()

    def finish() -> dict:
        loss = state["loss"]
        return {"loss_final": None if loss is None else float(loss.float()),
                "amp_skipped_steps": state["skipped"]}

    return Workload(step, 0, 0, 0, mean_flops(train_step_flops, cfg, batches), finish=finish)


def _forward(point, cfg, model, batches, device) -> Workload:
    s = point.strategies
    model.eval()
    run = s.ops.prepare(model)
    next_batch = _cycle(batches)

    def step():
        with torch.no_grad(), s.precision.autocast(device):
            forward_batch(run, next_batch(), cfg.is_encoder_decoder)

    return Workload(step, 0, 0, 0, mean_flops(forward_flops, cfg, batches))


def _generate(point, cfg, model, batches, device) -> Workload:
    s, w = point.strategies, point.workload
    if not cfg.is_encoder_decoder and any(
            b.key_padding_mask is not None or b.segment_ids is not None for b in batches):
        raise NotSupported("decoder-only generate needs unpadded prompts (use fixed lengths)")
    model.eval()
    next_batch = _cycle(batches)

    produced: list[int] = []  # rows may stop early at eos: count what was really generated

    def step():
        batch = next_batch()
        with s.precision.autocast(device):
            out = generate(model, batch.tokens, w.new_tokens, use_cache=True,
                           src_key_padding_mask=batch.key_padding_mask if cfg.is_encoder_decoder else None)
        produced.append(int(out.shape[0] * out.shape[1]))

    def finish() -> dict:
        return {"generated_tokens_per_step": sum(produced) / len(produced) if produced else None}

    new = float(w.batch_size * w.new_tokens)
    return Workload(step, float(w.batch_size), new, new, None, finish=finish)
