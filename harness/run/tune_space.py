"""The search space of ``tbench tune`` and the arithmetic of the search: what is skipped before
anything runs, what each rung measures, how configurations are scored and which are on the
Pareto front.

    check_space(points) -> None                 SuiteError unless the points form one group
    prune(points, budget) -> (kept, close, skipped)
    schedule(n, eta, finalists) -> [configurations measured at each rung]
    rung_point(point, rung, tune) -> the point as rung ``rung`` measures it
    ranking_slots(points) -> the slots a ranking stage runs on (one per core on CPU)
    score(record, objective) -> float | None    lower is better
    pareto(rows) -> the rows no other row beats on both time and memory
    measured_records(result, points, ...) -> {point id: record}, a cut run's from its rounds

Pruning, per configuration, before any worker starts: a strategy that refuses the point
(``not_supported``, with its reasons); a peak the memory model predicts above the budget by
more than the model's stated error (``predicted > budget x (1 + TOLERANCE)``: the prediction
and the budget named in the reason). A prediction within that error of the budget either way
is *close*: the real budgeted probe decides it (one round under ``measure.memory_budget_bytes``,
the probe of ``tbench frontier``). The rest is measured without a budget (a budgeted CPU step
pays page faults, so its time would not compare).

Successive halving (Jamieson & Talwalkar 2016; the fixed-budget form of Karnin et al. 2013):
rung 0 measures every kept configuration briefly (``tune.first_window_s`` of samples, one
round), each later rung the best ``1/eta`` of the one before with an ``eta`` times longer
window, until at most ``tune.finalists`` remain; those are decided in pairs
(``harness.run.tune``). Halving by rank, not by value, loses a configuration only when noise
reorders it past the cut: with ``eta`` = 3 the cut keeps a third, so a configuration must read
worse than two thirds of the rung to be dropped.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from harness import records
from harness.measure import memory_model, workload
from harness.run.record import point_record
from harness.suite.errors import SuiteError


@dataclass(frozen=True)
class Skipped:
    point_id: str
    label: str
    reason: str
    kind: str  # not_supported | over_budget | probe_oom | probe_failed | compile | failed | check


def group_key(point) -> str:
    """What a point shares with every point it can be paired with: all but its strategies."""
    data = point.config().model_dump(mode="json")
    data.pop("strategies")
    return repr(sorted(data.items()))


def check_space(points) -> None:
    """The space must be one workload with strategies varied: pairs compare step times."""
    keys = {group_key(p) for p in points}
    if len(keys) > 1:
        raise SuiteError(["tune: the sweep varies more than strategies (model, workload, measure "
                          "or device fields): the search compares step times of one workload; "
                          "sweep strategies.* only, and pin the rest with --set or a suite per value"])


def prune(points, budget: int | None):
    """(kept, close, skipped) -- see the module docstring."""
    kept, close, skipped = [], [], []
    tol = memory_model.TOLERANCE
    for p in points:
        reasons = workload.unsupported_reasons(p)
        if reasons:
            skipped.append(Skipped(p.id, p.label, "; ".join(reasons), "not_supported"))
            continue
        predicted = memory_model.predict(p).peak_bytes if budget else None
        if budget and predicted > budget * (1 + tol):
            skipped.append(Skipped(p.id, p.label, f"predicted peak {fmt(predicted)} > budget "
                                   f"{fmt(budget)} + {tol:.0%} (the memory model's stated error)",
                                   "over_budget"))
        elif budget and predicted * (1 + tol) >= budget:
            close.append(p)
        else:
            kept.append(p)
    return kept, close, skipped


def fmt(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def schedule(n: int, eta: int, finalists: int) -> list[int]:
    """Configurations measured at each rung: n, ceil(n / eta), ... while more than
    ``finalists`` remain (at least one rung)."""
    out = [n]
    while out[-1] > finalists:
        out.append(max(finalists, math.ceil(out[-1] / eta)))
    return out[:-1] if len(out) > 1 else out


def rung_point(point, rung: int, tune):
    """One round, a window ``first_window_s x eta^rung`` long, one warm-up step, one thread
    (``ranking_slots`` runs one such point per core), a contended round kept and flagged (the
    neighbour on the other core is expected; a rung ranks, it does not decide)."""
    window = tune.first_window_s * tune.eta ** rung
    return point.derive(measure={**RANKING, "min_time_s": window})


RANKING = {"rounds": 1, "warmup_iters": 1, "warmup_s": 0.0, "threads": 1, "on_contention": "flag"}


def ranking_slots(points):
    """Where a ranking stage's rounds run: on CPU, single-process one-thread points one per
    usable core at once (each core its own point, like the two sides of a duet); otherwise
    one at a time (None)."""
    if any(p.device != "cpu" or workload.nproc_of(p) > 1 or p.measure.threads != 1 for p in points):
        return None
    cores = len(os.sched_getaffinity(0))
    return [None] * cores if cores > 1 else None


def last_line(rec: dict) -> str:
    """The last line of a record's error (what a skip reason quotes)."""
    return ((rec.get("error") or "").strip().splitlines() or ["(no error text)"])[-1]


def peak_of(record: dict) -> float | None:
    m = record.get("metrics") or {}
    return m.get(records.memory_metric([record]))


def score(record: dict, objective) -> float | None:
    """The objective of a measured record; lower is better; None when it has no value."""
    if record.get("status") != "ok":
        return None
    m = record.get("metrics") or {}
    time_ms, peak = m.get("latency_ms_p50"), peak_of(record)
    if objective == "latency":
        return time_ms
    if objective == "tokens_per_s":
        return 1.0 / m["tokens_per_s"] if m.get("tokens_per_s") else None
    if objective == "peak_memory":
        return peak
    if not time_ms or not peak:
        return None
    return time_ms ** objective.get("time", 0.0) * peak ** objective.get("memory", 0.0)


def pareto(rows: list[dict]) -> list[dict]:
    """Rows (``time_ms``, ``peak_bytes``) that no other row beats on both (ties kept)."""
    have = [r for r in rows if r.get("time_ms") and r.get("peak_bytes")]
    return [r for r in have
            if not any(o["time_ms"] <= r["time_ms"] and o["peak_bytes"] <= r["peak_bytes"]
                       and (o["time_ms"], o["peak_bytes"]) != (r["time_ms"], r["peak_bytes"])
                       for o in have)]


def measured_records(result, points, baseline_id: str | None = None, compare=None) -> dict[str, dict]:
    """point id -> record of a stage's run; for a run cut short by the budget, the points whose
    group had not finished get a record built from the rounds that ended (durable in
    rounds.jsonl, not yet point records), with the design's looks as the run took them."""
    by_id = {r["point_id"]: r for r in result.records if r.get("status") != "interrupted"}
    if not result.interrupted:
        return by_id
    rounds = records.read_rounds(result.run_dir)
    design = result.run.get("design") or {}
    for p in points:
        done = [e for e in rounds.get(p.id, []) if e.get("status") == "ok"]
        if p.id in by_id or not done:
            continue
        rec = point_record(p, done)
        blocks = max((e.get("block") or 0 for e in done), default=0)
        rec["design"] = {"kind": design.get("kind"), "baseline": baseline_id, "stopped": "budget",
                         "looks": max(1, blocks - p.measure.min_rounds + 1) if p.measure.rounds == "auto" else None,
                         "blocks": blocks, **({"resolution": compare.resolution,
                                               "confidence": compare.confidence} if compare else {})}
        by_id[p.id] = rec
    return by_id
