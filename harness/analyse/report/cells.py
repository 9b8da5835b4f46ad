"""One cell of a report table: what a point measured, in human units.

    cell(rec, base, memory_metric) -> Cell    latency p50 [95% CI], tokens/s, peak memory (and
                                              the memory model's prediction, with ``⚠ mem
                                              model`` only where it is off by more than its
                                              stated tolerance), MFU, what the padding,
                                              parallel, precision, ops and serving axes
                                              measure, and the memory ratio to the baseline

A failed point shows its status (``OOM``, ``timeout``, ``not supported``, ...). Flags are not
drawn per cell: each group's answer says in one line what was re-measured or left out. Never
imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.records.metrics import MEM_MODEL_TOLERANCE
from harness.analyse.units import fmt_bytes, fmt_ms, fmt_num

STATUS_TEXT = {"oom": "OOM", "timeout": "timeout", "not_supported": "not supported",
               "error": "error", "crashed": "crashed", "interrupted": "interrupted",
               "contended": "contended"}


@dataclass
class Cell:
    status: str
    lines: list[str] = field(default_factory=list)
    point_id: str = ""


def _memory(rec: dict, metric: str):
    return (rec.get("metrics") or {}).get(metric)


def cell(rec: dict | None, base: dict | None, mem_metric: str) -> Cell:
    if rec is None:
        return Cell("absent", ["—"])
    status = rec.get("status", "error")
    if status != "ok":
        return Cell(status, [STATUS_TEXT.get(status, status)], rec.get("point_id", ""))
    m = rec.get("metrics") or {}
    lines = []
    p50 = m.get("latency_ms_p50")
    if p50 is not None:
        lines.append(fmt_ms(p50, m.get("latency_ms_p50_ci_low"), m.get("latency_ms_p50_ci_high")))
    if m.get("tokens_per_s") is not None:
        lines.append(f"{fmt_num(m['tokens_per_s'])} tok/s")
    if _memory(rec, mem_metric) is not None:
        lines.append(fmt_bytes(_memory(rec, mem_metric)))
        lines += _predicted_lines(m, _memory(rec, mem_metric), mem_metric)
    if m.get("mfu") is not None:  # tbench's count: causal pairs S(S+1)/2; PaLM's: S^2
        palm = f" (PaLM {m['mfu_palm']:.1%})" if m.get("mfu_palm") is not None else ""
        lines.append(f"MFU {m['mfu']:.1%}{palm}")
    lines += _axis_lines(m)
    if base is not None and base is not rec and base.get("status") == "ok":
        if _memory(base, mem_metric) and _memory(rec, mem_metric) is not None:
            lines.append(f"mem ×{_memory(rec, mem_metric) / _memory(base, mem_metric):.2f}")
    return Cell("ok", lines or ["ok"], rec.get("point_id", ""))


PREDICTED_FOR = ("mem_peak_allocated_bytes", "mem_peak_rss_above_baseline_bytes")


def _predicted_lines(m: dict, measured, mem_metric: str) -> list[str]:
    """The memory model's prediction beside the measured peak, and ``⚠ model +N%`` when they
    disagree by more than ``MEM_MODEL_TOLERANCE`` (a finding about the model or the strategy)."""
    predicted = m.get("mem_predicted_bytes")
    if not predicted or mem_metric not in PREDICTED_FOR:
        return []
    off = measured / predicted - 1
    lines = [f"pred {fmt_bytes(predicted)}"]
    if abs(off) > MEM_MODEL_TOLERANCE:
        lines.append(f"⚠ mem model {off:+.0%}")
    return lines


def _axis_lines(m: dict) -> list[str]:
    """What the padding, parallel, precision and ops axes measure, where a point has it."""
    lines = []
    if m.get("padding_efficiency") is not None and m["padding_efficiency"] < 1:
        lines.append(f"{m['padding_efficiency']:.1%} real tokens")
        if m.get("real_tokens_per_s") is not None:
            lines.append(f"{fmt_num(m['real_tokens_per_s'])} real tok/s")
    if m.get("model_state_bytes_max") is not None:
        lines.append(f"model states {fmt_bytes(m['model_state_bytes_max'])}/rank")
    if m.get("loss_parity_rel_diff") is not None:
        flag = "" if m.get("loss_parity_ok", True) else " (beyond tolerance)"
        lines.append(f"loss vs fp32 {m['loss_parity_rel_diff']:.1e}{flag}")
    if m.get("amp_skipped_steps"):
        lines.append(f"{m['amp_skipped_steps']} skipped steps")
    if m.get("compile_s") is not None:
        lines.append(f"compile {m['compile_s']:.1f} s")
    if m.get("flex_block_mask_ms") is not None:
        lines.append(f"{m['flex_block_masks']} block masks, {m['flex_block_mask_ms']:.1f} ms each")
    lines += _serving_lines(m)
    if m.get("throttled"):
        lines.append("throttled")
    return lines


def _serving_lines(m: dict) -> list[str]:
    """What the inference workloads and the compression axis measure, where a point has it."""
    lines = []
    if m.get("ttft_ms_p50") is not None:
        lines.append(f"TTFT {fmt_ms(m['ttft_ms_p50'])}")
    if m.get("itl_ms_p50") is not None:
        lines.append(f"ITL p50 {fmt_ms(m['itl_ms_p50'])}, p99 {fmt_ms(m['itl_ms_p99'])}")
    if m.get("kv_cache_bytes") is not None:
        same = "" if m.get("kv_cache_analytic_bytes") == m["kv_cache_bytes"] else \
            f" (analytic {fmt_bytes(m.get('kv_cache_analytic_bytes') or 0)})"
        lines.append(f"KV cache {fmt_bytes(m['kv_cache_bytes'])}{same}")
    if m.get("mem_bw_gbs") is not None:
        util = m.get("mem_bw_util")
        lines.append(f"mem BW {m['mem_bw_gbs']:.3g} GB/s" + (f" ({util:.1%} of peak)" if util is not None
                                                            else " (peak n/a)"))
    if m.get("compression_logits_rel_diff") is not None:
        lines.append(f"logits Δ {m['compression_logits_rel_diff']:.1e}, loss Δ "
                     f"{m.get('compression_loss_rel_diff') or 0:.1e}")
    if m.get("weight_uncompressed_bytes") is not None:
        lines.append(f"weights {fmt_bytes(m['weight_bytes'])} of {fmt_bytes(m['weight_uncompressed_bytes'])}")
    return lines


