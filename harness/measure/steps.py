"""Build the measured work of one point: model, data, precision, optimizer and ``step()``.

Input: a resolved ``Point`` and the torch device string it runs on ("cpu", "cuda:<i>").
Output: ``build(point, device) -> Workload`` (``harness.measure.workload``) whose ``step()`` is one
unit of measured work: ``train`` = forward + loss + backward + optimizer step (a DeepSpeed
engine step for parallel points, ``harness.measure.steps_parallel``); ``forward`` = inference
forward under ``no_grad``; ``generate`` = greedy decode of ``workload.new_tokens`` tokens with
the KV cache. Batches cycle through ``workload.num_batches``.
"""
from __future__ import annotations

import torch

from harness.measure.steps_parallel import train_parallel
from harness.measure.workload import (
    LR,
    NotSupported,
    Workload,
    cycle,
    make_batches,
    mean_flops,
    model_config,
    nproc_of,
)
from implementations.flops import forward_flops, train_step_flops
from implementations.generate import generate
from implementations.model import build_model, forward_batch


def build(point, device: str) -> Workload:
    """Everything the point measures, built from the seeded state the worker set up."""
    cfg = model_config(point)
    batches, n_seq = make_batches(point, cfg, device)
    point.strategies.precision.setup(device)
    model = build_model(cfg).to(device)
    builders = {"train": _train, "forward": _forward, "generate": _generate}
    wl = builders[point.workload.kind](point, cfg, model, batches, device)
    wl.model = model
    wl.close = point.strategies.precision.teardown
    wl.batches_per_cycle = len(batches)
    if point.workload.kind != "generate":
        wl.sequences = n_seq / len(batches)
        wl.real_tokens = sum(b.real_tokens for b in batches) / len(batches)
        wl.processed_tokens = sum(b.processed_tokens for b in batches) / len(batches)
    return wl


def _train(point, cfg, model, batches, device) -> Workload:
    s = point.strategies
    if nproc_of(point) > 1 or getattr(s.parallel, "name", "none") != "none":
        return train_parallel(point, cfg, model, batches, device)
    model.train()
    optimizer = s.ops.make_optimizer(model.parameters(), LR)
    scaler = s.precision.make_scaler(device)
    run = s.ops.prepare(model)
    next_batch = cycle(batches)
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
    next_batch = cycle(batches)

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
    next_batch = cycle(batches)

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
