"""The profiled pass (``measure.profile``) as report, plots and compare read it.

    region_shares(rec) -> {region: share}   ``profile_share_<region>``, in ``REGIONS`` order;
                                            {} for a point not profiled
    region_ms(rec) -> {region: ms}          each share times the timed median ``latency_ms_p50``,
                                            so regions of two points compare in milliseconds of
                                            the step the verdicts are about
"""
from __future__ import annotations

REGIONS = ("embedding", "attention", "ffn", "norm", "lm_head", "loss", "forward_other",
           "backward", "optimizer", "communication", "other")  # harness.measure.profiling's
SHARE = "profile_share_"


def region_shares(rec: dict) -> dict[str, float]:
    """Region -> share of the profiled step, ``REGIONS`` first; {} for a point not profiled."""
    m = rec.get("metrics") or {}
    found = {k[len(SHARE):]: float(v) for k, v in m.items()
             if k.startswith(SHARE) and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {r: found[r] for r in [r for r in REGIONS if r in found] + sorted(set(found) - set(REGIONS))}


def region_ms(rec: dict) -> dict[str, float]:
    """Region -> milliseconds of the timed median (share x ``latency_ms_p50``); {} without both."""
    p50 = (rec.get("metrics") or {}).get("latency_ms_p50")
    shares = region_shares(rec) if rec.get("status", "ok") == "ok" else {}
    return {r: s * p50 for r, s in shares.items()} if p50 is not None else {}
