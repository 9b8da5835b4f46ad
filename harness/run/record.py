"""A point's record (docs/DESIGN.md "Result record") from the rounds it was measured in.

    base_record(point, started_at) -> the provenance part (id, label, suite, index, params, ...)
    point_params(point) -> flattened swept + key config fields, dotted names
    point_record(point, rounds) -> the whole record

The record's status is its last round's (a failed round ends a point). On success it pools the
rounds' samples, takes latency from ``records.stats.summarize_rounds`` -- rounds measured on a
disturbed machine kept out of the headline while two clean ones remain -- and every other
metric from ``merge_metrics``, keeps each round (samples, contention evidence, warnings, its
block and place in it, a duet's partner and common window, Slurm node) and sets ``flags``: ``contended`` (a round measured on a disturbed machine), ``noisy`` (a round
with IQR/median >= 10%), ``drift`` (round medians spread more than ``DRIFT_CV``).
"""
from __future__ import annotations

from typing import Any

from harness.records import stats
from implementations import registry

ROUND_KEYS = ("round", "status", "error", "started_at", "duration_s", "attempts", "samples_ms",
              "contention", "warnings", "block", "group", "order", "duet")
DRIFT_CV = 0.05  # round medians spread more than this (CV): flagged "drift"


def point_params(point) -> dict[str, Any]:
    """Flattened swept + key config fields with dotted names (DESIGN.md "params")."""
    data = point.to_json()
    params: dict[str, Any] = {"device": point.device, "preset": point.model.preset}
    params.update(point.model.overrides)
    w = data["workload"]
    lengths = w.pop("lengths") or {"distribution": "fixed"}
    params.update(w)
    params["lengths"] = lengths.pop("distribution")
    params.update({f"lengths.{k}": v for k, v in lengths.items() if v is not None})
    for axis in registry.AXES:
        strategy = getattr(point.strategies, axis)
        params[axis] = strategy.label
        params.update({f"{axis}.{k}": v for k, v in (data["strategies"][axis] or {}).items()})
    return params


def base_record(point, started_at: str) -> dict[str, Any]:
    return {"point_id": point.id, "label": point.label, "suite": point.suite,
            "index": point.index, "status": None, "error": None, "stderr_tail": None,
            "started_at": started_at, "duration_s": None, "params": point_params(point),
            "samples_ms": [], "metrics": {}, "ranks": [], "warnings": []}


def merge_metrics(per_round: list[dict]) -> dict[str, Any]:
    """One metrics dict from the rounds': a peak or maximum is the largest round's, a minimum
    the smallest, a flag true if any round's, another number the median over rounds (identical
    rounds -- FLOPs, parameter bytes -- keep their value); anything else is the first round's."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for m in per_round for k in m):
        values = [m[key] for m in per_round if m.get(key) is not None]
        if not values:
            out[key] = None
        elif all(isinstance(v, bool) for v in values):
            out[key] = any(values)
        elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = values[0]
        elif "peak" in key or key.endswith("_max") or key.startswith("mem_"):
            out[key] = max(values)
        elif key.endswith("_min"):
            out[key] = min(values)
        else:
            out[key] = stats.median(values)
    return out


def round_entries(rounds: list[dict]) -> list[dict]:
    """Each round as the record keeps it: ``ROUND_KEYS``, the Slurm node, its median."""
    out = []
    for r in rounds:
        entry = {k: r.get(k) for k in ROUND_KEYS}
        if r.get("node"):  # the compute node of a Slurm job (harness.run.slurm)
            entry["node"] = r["node"]
        entry["latency_ms_p50"] = stats.median(r["samples_ms"]) if r.get("samples_ms") else None
        out.append(entry)
    return out


def round_warnings(rounds: list[dict]) -> list[str]:
    many = len(rounds) > 1
    return list(dict.fromkeys((f"round {r['round']}: {w}" if many else w)
                              for r in rounds for w in r.get("warnings") or []))


def point_record(point, rounds: list[dict]) -> dict[str, Any]:
    """The point's record from its rounds (see the module docstring)."""
    last = rounds[-1]
    record = base_record(point, rounds[0]["started_at"])
    record.update({k: last.get(k) for k in ("status", "error", "stderr_tail") if k in last})
    record["duration_s"] = sum(r["duration_s"] for r in rounds)
    record["rounds"] = round_entries(rounds)
    if "ranks" in last:
        record["ranks"] = last["ranks"]
    record["warnings"] = round_warnings(rounds)
    flags = set()
    if any(r["contention"].get("contended") for r in rounds):
        flags.add("contended")
    if any(stats.noise_warning(r.get("samples_ms") or []) for r in rounds):
        flags.add("noisy")
    if last.get("status") == "ok":
        flags |= measured(record, rounds)
    record["flags"] = sorted(flags)
    return record


def measured(record: dict, rounds: list[dict]) -> set[str]:
    """Samples and metrics of an ok point into ``record``; the flags they raise (drift)."""
    samples = [r.get("samples_ms") or [] for r in rounds]
    record["samples_ms"] = [x for r in samples for x in r]
    record["metrics"] = merge_metrics([r.get("metrics") or {} for r in rounds])
    disturbed = [bool((r.get("contention") or {}).get("contended")) for r in rounds]
    record["metrics"].update(stats.summarize_rounds(samples, excluded=disturbed))
    cv = record["metrics"]["latency_ms_between_round_cv"]
    if cv is None or cv <= DRIFT_CV:
        return set()
    record["warnings"].append(f"round medians differ: between-round CV {cv:.1%} "
                              f"(> {DRIFT_CV:.0%}); the CI is wide accordingly")
    return {"drift"}
