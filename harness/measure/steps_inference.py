"""The inference workloads of a point (``harness.measure.steps`` dispatches to them) and their rates.

Input: a resolved ``Point``, its model source, the built model (eval mode), its batches, the
torch device string. Output: a ``Workload`` whose ``step()`` is one unit of serving work, run
through the model's serving protocol (``implementations.serving``: tbench's Transformer with its
pattern-aware caches, a transformers model with its own cache, ``implementations.hf.serving``):

  * ``prefill``: the prompt (``seq_len`` tokens; encoder-decoder: the source, then the start
    token) runs once through the model, filling fresh KV caches, and the first new token is
    chosen (argmax of the last position's logits): one step is the time to first token (TTFT).
    The argmax is O(B x V), negligible next to the forward. Per step: ``B x seq_len`` tokens.
  * ``decode``: one token per row at position ``context_len``, the caches already holding
    ``context_len`` positions (filled once while building, by a prefill in chunks of
    ``implementations.serving.DECODE_FILL_CHUNK`` for caches that keep every position). After each step the caches are
    rewound to ``context_len``, so every sample is the same step. Per step: ``B`` tokens.
    The cache's measured bytes (``kv_cache_bytes``) sit beside the analytic count
    (``kv_cache_analytic_bytes``), both from the serving protocol. ``decode_step_read_bytes`` is
    what one step must read: every weight once (``weight_bytes``), the K/V the pattern reads
    (``kv_read_step_bytes``) and, for an encoder-decoder, the memory's K/V.
  * ``generate``: greedy decode of ``new_tokens`` tokens with the KV cache; the time of each
    token is kept (``implementations.generate``'s ``token_times``), so TTFT and the inter-token
    latency distribution (``itl_ms_p50/p90/p99``, ``itl_ms_min``; ``itl_gaps_per_step``: gaps
    per timed step, a count, generated tokens per row - 1) come from the timed steps only.

``compress(point, cfg, model, batches, device)`` applies the compression strategy and returns its
quality cost (``implementations.compression.quality``). ``rate_metrics(wl, samples_ms,
device_name, point)`` turns the step time into the figures a serving engineer reads:
``ttft_ms_p50``, ``prefill_tokens_per_s``, ``decode_tokens_per_s`` (B / mean step time),
``mem_bw_gbs`` (bytes read per step / mean step time, GB/s = 1e9 bytes/s) and ``mem_bw_util``
(a fraction of ``peaks.peak_bandwidth_gbs``, GB/s; None where the device has no datasheet
figure, such as any CPU). ``kv_cache_slots`` is a count (positions kept per layer).
"""
from __future__ import annotations

import functools
import time

import torch

from harness.measure import peaks
from harness.measure.workload import NotSupported, Workload, cycle, mean_flops
from harness.records import stats
from implementations.compression import quality
from implementations.flops import decode_step_flops, prefill_flops
from implementations.hf.model import HfModelConfig
from implementations.hf.serving import HfServing
from implementations.model import ModelConfig
from implementations.serving import TransformerServing


def compress(point, cfg, model, batches, device: str) -> dict:
    """Apply ``strategies.compression`` in place; the weight bytes before and after, and the
    relative difference of logits and loss against the uncompressed model on ``batches``."""
    s = point.strategies
    before = quality.weight_bytes(model)
    if s.compression.identity:
        return {"weight_bytes": before}
    model.eval()

    def autocast():
        return s.precision.autocast(device)

    reference = quality.outputs(model, batches, cfg.is_encoder_decoder, autocast)
    s.compression.compress(model, device, s.precision)
    compressed = quality.outputs(model, batches, cfg.is_encoder_decoder, autocast)
    return {"weight_bytes": quality.weight_bytes(model), "weight_uncompressed_bytes": before,
            **quality.quality_cost(reference, compressed)}


def _unpadded(cfg, batches, kind: str) -> None:
    if not cfg.is_encoder_decoder and any(
            b.key_padding_mask is not None or b.segment_ids is not None for b in batches):
        raise NotSupported(f"decoder-only {kind} needs unpadded prompts (use fixed lengths)")


def _no_compile(point, kind: str) -> None:
    if getattr(point.strategies.ops, "compile", False):
        raise NotSupported(f"{kind} runs the model eagerly: torch.compile is not applied to "
                           "cached decoding (its cache shapes change every step)")


def prefill_workload(point, cfg, model, batches, device) -> Workload:
    s, enc_dec = point.strategies, cfg.is_encoder_decoder
    _unpadded(cfg, batches, "prefill")
    _no_compile(point, "prefill")
    next_batch = cycle(batches)
    serve = serving(cfg, model)

    def step():
        batch = next_batch()
        mask = batch.key_padding_mask if enc_dec else None
        with torch.no_grad(), s.precision.autocast(device):
            serve.prefill(batch.tokens, mask).argmax(-1)  # the first token  # (B,)

    return Workload(step, 0, 0, 0, mean_flops(prefill_flops, cfg, batches))


@functools.singledispatch
def serving(cfg, model):
    """The serving protocol (``implementations.serving``) of a built model, by its source's type
    (as ``steps_parallel.rank_train`` dispatches on the parallel strategy's)."""
    raise NotSupported(f"{cfg.label}: no serving protocol (prefill, decode, generate)")


@serving.register
def _transformer(cfg: ModelConfig, model):
    return TransformerServing(model)


@serving.register
def _hf(cfg: HfModelConfig, model):
    return HfServing(model)


def decode_workload(point, cfg, model, batches, device) -> Workload:
    s, w, enc_dec = point.strategies, point.workload, cfg.is_encoder_decoder
    _no_compile(point, "decode")
    B, c = w.batch_size, w.context_len
    gen = torch.Generator().manual_seed(point.seed)
    context = torch.randint(3, cfg.vocab_size, (B, c), generator=gen).to(device)  # (B, c)
    src, mask = (batches[0].tokens, batches[0].key_padding_mask) if enc_dec else (None, None)
    with torch.no_grad(), s.precision.autocast(device):
        filled = serving(cfg, model).decode(context, c, src, mask)
    weights = quality.weight_bytes(model)
    kv = dict(filled.report)
    memory_read = kv.pop("memory_read_bytes")

    def step():
        with torch.no_grad(), s.precision.autocast(device):
            filled.step().argmax(-1)  # the next token  # (B,)

    src_len = int(batches[0].tokens.shape[1]) if enc_dec else None
    wl = Workload(step, float(B), float(B), float(B), decode_step_flops(cfg, B, c, src_len))
    wl.extra.update(kv, decode_step_read_bytes=weights + kv["kv_read_step_bytes"] + memory_read)
    return wl


def generate_workload(point, cfg, model, batches, device) -> Workload:
    s, w, enc_dec = point.strategies, point.workload, cfg.is_encoder_decoder
    _unpadded(cfg, batches, "generate")
    next_batch = cycle(batches)
    produced: list[int] = []  # rows may stop early at eos: count what was really generated
    ttft, gaps = [], []  # per step: first token (ms), then the gaps between tokens (ms)
    wl = Workload(lambda: None, float(w.batch_size), float(w.batch_size * w.new_tokens),
                  float(w.batch_size * w.new_tokens), None)
    serve = serving(cfg, model)

    def step():
        batch = next_batch()
        times = []
        t0 = time.perf_counter_ns()
        with s.precision.autocast(device):
            out = serve.generate(batch.tokens, w.new_tokens, token_times=times,
                                 src_mask=batch.key_padding_mask if enc_dec else None)
        produced.append(int(out.shape[0] * out.shape[1]))
        ttft.append((times[0] - t0) / 1e6)
        gaps.append([(b - a) / 1e6 for a, b in zip(times, times[1:])])

    def finish() -> dict:
        n = wl.timed_steps or len(produced)  # the timed steps are the last ones
        out = {"generated_tokens_per_step": sum(produced[-n:]) / n if produced else None}
        itl = [g for per_step in gaps[-n:] for g in per_step]
        out["ttft_ms_p50"] = stats.median(ttft[-n:]) if ttft else None
        out["itl_gaps_per_step"] = len(itl) / n if produced else None  # a count: tokens - 1
        out["itl_ms_min"] = min(itl) if itl else None
        for q in (50, 90, 99):
            out[f"itl_ms_p{q}"] = stats.percentile(itl, q) if itl else None
        return out

    wl.step, wl.finish = step, finish
    return wl


def rate_metrics(wl, samples_ms: list[float], device_name: str | None, point) -> dict:
    """Serving figures of an inference point from its timed samples (module docstring)."""
    kind, mean_s = point.workload.kind, stats.mean(samples_ms) / 1e3
    out = {k: v for k, v in wl.extra.items() if k != "rank_metrics"}  # compression, KV cache
    if kind == "prefill":
        out.update(ttft_ms_p50=stats.median(samples_ms),
                   prefill_tokens_per_s=wl.processed_tokens / mean_s)
    elif kind == "decode":
        gbs = wl.extra["decode_step_read_bytes"] / mean_s / 1e9
        peak = peaks.peak_bandwidth_gbs(device_name)
        out.update(decode_tokens_per_s=wl.processed_tokens / mean_s, mem_bw_gbs=gbs,
                   peak_bandwidth_gbs=peak, mem_bw_util=gbs / peak if peak else None)
    return out
