"""The record's schema: which provenance fields, metrics and list columns a record carries.

``METRICS`` is the catalogue of metric names (units in the names; docs/DESIGN.md "Result
record" says what each one is); ``load_run`` puts them in this order after the provenance and
the parameters. ``memory_metric(records)`` is the peak-memory metric the records carry, in the
order of ``MEMORY_METRICS``. Unavailable metrics are ``null`` in a record, never 0.
"""
from __future__ import annotations

from typing import Any

# |measured / predicted - 1| of a peak beyond this is a finding about the memory model or the
# strategy, not noise: shared by the worker's memory model and the reports; tests/measure/test_memory_model.py
# says how it was chosen
MEM_MODEL_TOLERANCE = 0.3

PROVENANCE = (
    "point_id", "label", "suite", "index", "status", "error", "stderr_tail",
    "started_at", "duration_s", "device", "device_name", "git_commit", "git_dirty",
    "fingerprint",
)

METRICS = (
    "latency_ms_p50", "latency_ms_mean", "latency_ms_std", "latency_ms_iqr",
    "latency_ms_p10", "latency_ms_p90", "latency_ms_p99",
    "latency_ms_p50_ci_low", "latency_ms_p50_ci_high", "n_samples",
    "n_rounds", "latency_ms_round_p50s", "latency_ms_between_round_cv", "latency_ms_rounds_excluded",
    "threads", "cpus", "process_cpu_ms_per_step",
    "samples_per_s", "tokens_per_s", "real_tokens_per_s", "padding_efficiency",
    "mem_peak_allocated_bytes", "mem_peak_reserved_bytes", "mem_nvml_peak_bytes",
    "mem_process_gpu_bytes", "mem_peak_rss_bytes", "mem_rss_baseline_bytes",
    "mem_peak_rss_above_baseline_bytes",
    "power_w_mean", "energy_j", "gpu_util_pct_mean",
    "sm_clock_mhz_min", "sm_clock_mhz_median", "sm_clock_mhz_max",
    "temperature_c_max", "throttled", "throttle_reasons", "power_capped",
    "flops_per_step", "tflops_per_s", "mfu", "peak_tflops", "flops_per_step_palm", "mfu_palm",
    "compile_s", "attention_products", "flex_block_masks", "flex_block_mask_ms", "loss_final", "loss_ref_fp32", "loss_parity_rel_diff", "loss_parity_ok",
    "check_ok", "check_loss_rel_diff", "check_grad_rel_diff", "check_reference", "check_rtol",
    "amp_skipped_steps", "model_state_bytes_max", "model_state_imbalance",
    "per_token_latency_ms", "loss_parity_final", "loss_parity_amp_skipped_steps",
    "energy_j_per_step", "energy_j_per_token", "energy_j_point", "sdpa_backends", "warmup_steps",
    "latency_ms_p50_rank_max", "energy_j_all_ranks", "throttled_any_rank",
    # inference workloads (prefill / decode / generate) and their KV caches
    "ttft_ms_p50", "itl_ms_p50", "itl_ms_p90", "itl_ms_p99", "prefill_tokens_per_s",
    "decode_tokens_per_s", "generated_tokens_per_step", "kv_cache_bytes",
    "kv_cache_analytic_bytes", "kv_cache_slots", "kv_read_step_bytes", "decode_step_read_bytes",
    "mem_bw_gbs", "mem_bw_util", "peak_bandwidth_gbs",
    # compression: weights and quality cost against the uncompressed model
    "weight_bytes", "weight_uncompressed_bytes", "compression_logits_rel_diff",
    "compression_loss_rel_diff",
    # activation checkpointing (hardware FLOPs) and the memory model
    "hardware_flops_per_step", "hfu", "mem_predicted_bytes", "mem_predicted_states_bytes",
    "mem_predicted_activations_bytes",
)

LIST_COLUMNS = ("samples_ms", "warnings", "ranks")

# Peak memory of a point, best first: what the point itself allocated on the GPU, else on the
# CPU above the baseline taken after imports (torch alone is ~250 MB of RSS), else raw RSS.
MEMORY_METRICS = ("mem_peak_allocated_bytes", "mem_peak_rss_above_baseline_bytes",
                  "mem_peak_rss_bytes")


def memory_metric(records: list[dict[str, Any]]) -> str:
    """The first of ``MEMORY_METRICS`` that some record has a value for (else the last)."""
    for name in MEMORY_METRICS:
        if any((r.get("metrics") or {}).get(name) is not None for r in records):
            return name
    return MEMORY_METRICS[-1]


