"""The metrics a worker derives from a measured point: rates from the mean step time, FLOPs and
MFU (model FLOPs; hardware FLOPs and HFU with checkpointing's recomputation), attention
products, energy per step and token, FlexAttention's block masks, and loss parity against fp32.

Throughputs divide per-step counts by the MEAN step time (total work over total time);
``per_token_latency_ms`` uses the median. ``flops_per_step`` and ``mfu`` stay model FLOPs.
"""
from __future__ import annotations

from typing import Any

from harness.measure import peaks, workload
from harness.records import stats


def device_name(device: str) -> str | None:
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else None


def energy_metrics(window: dict, whole: dict, n_steps: int, tokens_per_step: float) -> dict:
    energy = window.get("energy_j")
    per_step = None if energy is None or not n_steps else energy / n_steps
    return {"energy_j_per_step": per_step,
            "energy_j_per_token": None if per_step is None or not tokens_per_step
            else per_step / tokens_per_step,
            "energy_j_point": whole.get("energy_j")}


def flex_metrics() -> dict[str, Any]:
    """FlexAttention block masks of this point: how many were built (one per shape without
    padding or segments, one per step with them: then inside the step time) and what building
    one costs once warm (built again after the timing, so the timed steps did not pay it)."""
    from implementations.attention.flex import STATS, retime_last_block_mask

    seconds = retime_last_block_mask()
    return {"flex_block_masks": STATS["block_masks"],
            "flex_block_mask_ms": None if seconds is None else 1e3 * seconds}


def throughput(wl, samples_ms: list[float], point, finished: dict) -> dict[str, float | None]:
    """Per-second rates from the mean step time; ``finished`` is ``wl.finish()`` taken right
    after the timed samples (generate: the tokens those steps really produced)."""
    mean_s = stats.mean(samples_ms) / 1e3
    new = finished.get("generated_tokens_per_step") if point.workload.kind == "generate" else None
    processed = new if new is not None else wl.processed_tokens
    real = new if new is not None else wl.real_tokens
    out = {
        "samples_per_s": wl.sequences / mean_s,
        "tokens_per_s": processed / mean_s,
        "real_tokens_per_s": real / mean_s,
        "padding_efficiency": real / processed if processed else None,
        "per_token_latency_ms": None,
    }
    if point.workload.kind == "generate":
        out["per_token_latency_ms"] = stats.median(samples_ms) / point.workload.new_tokens
    elif point.workload.kind == "decode":  # one step is one token per row
        out["per_token_latency_ms"] = stats.median(samples_ms)
    return out


def flops_metrics(wl, samples_ms: list[float], device: str, point) -> dict[str, float | None]:
    peak = peaks.peak_tflops(device_name(device), point.strategies.precision.math_format)
    if wl.flops is None:
        return {"flops_per_step": None, "tflops_per_s": None, "mfu": None, "peak_tflops": peak,
                "hardware_flops_per_step": None, "hfu": None, "flops_per_step_palm": None,
                "mfu_palm": None}
    step_s = stats.mean(samples_ms) / 1e3
    achieved = wl.flops / step_s
    hardware = wl.flops * hardware_ratio(point, wl.cfg)  # + what checkpointing recomputes
    palm = wl.flops_palm
    return {"flops_per_step": wl.flops, "tflops_per_s": achieved / 1e12,
            "mfu": peaks.mfu(achieved, peak), "peak_tflops": peak,
            "hardware_flops_per_step": hardware, "hfu": peaks.mfu(hardware / step_s, peak),
            "flops_per_step_palm": palm,
            "mfu_palm": None if palm is None else peaks.mfu(palm / step_s, peak)}


def attention_products(point, cfg=None) -> int:
    """The self-attention products of one sequence at the point's nominal length: the (query,
    key) pairs scored (q k^T) plus the pairs attended (p v), encoder layers bidirectional,
    decoder layers causal; the two are equal except for topk, which scores every pair; linformer
    adds its K and V projections (per query head's share of its K/V head). Dense's
    over a pattern's is the pattern's ideal speed-up (the report's kernel answers)."""
    cfg = workload.model_config(point) if cfg is None else cfg
    S = point.workload.seq_len

    def products(causal: bool) -> int:
        a = cfg.attention.in_self_attention(causal)
        return (a.allowed_pairs(S, causal) + a.scored_pairs(S, causal)
                + round(a.projection_products(S) * cfg.kv_heads / cfg.n_heads))

    return cfg.n_encoder_layers * products(False) + cfg.n_decoder_layers * products(True)


def hardware_ratio(point, cfg) -> float:
    """Hardware over model FLOPs of a step at the point's nominal shape (``batch_size`` x
    ``seq_len``; padding strategies vary the shape a little, the ratio barely): 1 unless a
    training step recomputes checkpointed activations."""
    if point.workload.kind != "train" or not point.strategies.memory.recomputes:
        return 1.0
    from implementations.flops import hardware_train_flops, train_step_flops

    w = point.workload
    model = train_step_flops(cfg, w.batch_size, w.seq_len)
    return hardware_train_flops(cfg, w.batch_size, w.seq_len, point.strategies.memory) / model


PARITY_NAMES = {"loss_final": "loss_parity_final", "amp_skipped_steps": "loss_parity_amp_skipped_steps"}


def parity(point, cfg, device: str, warnings: list[str]) -> dict[str, Any]:
    """Loss after ``parity_steps`` train steps vs fp32 from the same seed (train only).

    The parity run's own loss and skipped steps are renamed (``PARITY_NAMES``): the measured
    run's ``loss_final`` and ``amp_skipped_steps`` keep their names and values."""
    steps = point.workload.parity_steps
    if point.workload.kind != "train" or steps == 0:
        return {}
    from implementations.model import build_model
    from implementations.precision.parity import loss_parity

    if cfg.is_encoder_decoder:
        warnings.append("loss parity skipped: it needs a decoder-only model")
        return {}
    batches, _ = workload.make_batches(point, cfg, device)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    every = [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
             SDPBackend.CUDNN_ATTENTION]
    with sdpa_kernel(every):  # precision parity, not the point's SDPA backend (fp32 has no flash)
        out = loss_parity(lambda: build_model(cfg), batches, point.strategies.precision, steps,
                          device, point.seed)
    if not out["loss_parity_ok"]:
        warnings.append(f"loss parity failed: relative difference {out['loss_parity_rel_diff']} "
                        f"after {steps} steps vs fp32")
    return {PARITY_NAMES.get(k, k): v for k, v in out.items()}


def correctness(point, cfg, device: str, warnings: list[str]) -> dict[str, Any]:
    """``measure.check``: the point's model against its reference twin, one float64 training
    step on the point's first batch (``implementations.correctness``); train points only."""
    if not point.measure.check or point.workload.kind != "train":
        return {}
    from implementations.correctness import twin_check

    batches, _ = workload.make_batches(point, cfg, device)
    s = point.strategies
    out = twin_check(cfg, s.memory, s.ops, batches[0], point.seed)
    if not out["check_ok"]:
        warnings.append(f"correctness check failed: loss differs by {out['check_loss_rel_diff']:.1e}, "
                        f"gradients by {out['check_grad_rel_diff']:.1e} from the twin "
                        f"({out['check_reference']}; tolerance {out['check_rtol']:.0e})")
    return out
