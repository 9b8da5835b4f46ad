"""Hand-built run folders (docs/DESIGN.md "Run folder") for report/compare/export tests.

``record(...)`` builds one result record; its latency metrics come from ``samples_ms`` through
``harness.records.stats.summarize`` (as the worker does) -- or, given ``rounds_ms`` (one list of
samples per worker process), from ``stats.summarize_rounds`` with the record's ``rounds``
entries as ``harness.run.record`` keeps them (``blocks``: each round's block of a paired design,
``design``: the group summary a paired run records) -- other metrics are given explicitly.
``write_run(dir, records, ...)`` writes results.jsonl, run.json, env.json, suite.resolved.json.
``t_quantile``, ``sd`` and ``log_t`` compute expected intervals by hand (math only, never the
harness), for the tests that check the harness's.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from harness.records import stats


def record(point_id: str, *, status: str = "ok", samples_ms=None, index: int = 0,
           label: str | None = None, params: dict | None = None, metrics: dict | None = None,
           error: str | None = None, ranks=None, suite: str = "demo", rounds_ms=None,
           blocks=None, design: dict | None = None) -> dict:
    samples = list(samples_ms or [])
    m: dict = {}
    rounds = None
    if rounds_ms is not None:
        samples = [x for r in rounds_ms for x in r]
        rounds = [{"round": i + 1, "status": "ok", "samples_ms": list(r), "contention": None,
                   "warnings": [], "block": blocks[i] if blocks else None,
                   "latency_ms_p50": stats.median(r)} for i, r in enumerate(rounds_ms)]
        if status == "ok":
            m.update(stats.summarize_rounds(rounds_ms))
    elif status == "ok" and samples:
        m.update(stats.summarize(samples))
    m.update(metrics or {})
    rec = {
        "point_id": point_id, "label": label or point_id, "suite": suite, "index": index,
        "status": status, "error": error, "stderr_tail": None,
        "started_at": "2025-01-01T00:00:00+00:00", "duration_s": 1.0,
        "params": dict(params or {}), "samples_ms": samples if status == "ok" else [],
        "metrics": m if status == "ok" else {}, "ranks": list(ranks or []), "warnings": [],
    }
    if rounds is not None:
        rec["rounds"] = rounds
    if design is not None:
        rec["design"] = dict(design)
    return rec


def write_run(run_dir, records, *, suite: str = "demo", device: str = "cpu",
              fingerprint: str = "fp-cpu-1", env: dict | None = None) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "results.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    (run_dir / "run.json").write_text(json.dumps({
        "suite": suite, "device": device, "fingerprint": fingerprint,
        "started_at": "2025-01-01T00:00:00+00:00", "finished_at": "2025-01-01T00:10:00+00:00",
        "points_total": len(records)}), encoding="utf-8")
    (run_dir / "env.json").write_text(json.dumps(env or {
        "python": "3.11.7", "torch": "2.13.0", "cpu": "test cpu", "cpu_count": 2,
        "git": {"commit": "abc123", "dirty": False}}), encoding="utf-8")
    (run_dir / "suite.resolved.json").write_text(json.dumps({"name": suite}), encoding="utf-8")
    return run_dir


def attention_sweep(strategies=("dense", "local_w128"), seq_lens=(256, 512), *,
                    base_ms: float = 10.0, fail: dict | None = None, rounds=None) -> list[dict]:
    """A strategy x seq_len sweep with simple, hand-checkable numbers.

    Point (strategy s, seq_len L) at position (i, j): samples are ``base_ms * (i + 1) * (j + 1)``
    plus a fixed +-1% pattern; tokens/s = 1000 * L / p50; memory = L * 1 MiB * (i + 1).
    ``fail`` maps (strategy, seq_len) -> (status, error text). ``rounds``: measured in rounds,
    round r's samples those times ``rounds[r]`` (a sequence of factors for every point, or a
    dict strategy -> its factors); the record's rounds carry no block.
    """
    out, fail = [], fail or {}
    pattern = [0.99, 1.0, 1.01, 1.0, 0.995, 1.005, 1.0, 0.99, 1.01, 1.0, 1.0]  # median 1.0
    for i, s in enumerate(strategies):
        for j, L in enumerate(seq_lens):
            pid = f"{s}-{L}"
            params = {"attention": s, "attention.name": s.split("_")[0], "seq_len": L, "ops": "fused",
                      "precision": "fp32"}
            if (s, L) in fail:
                status, err = fail[(s, L)]
                out.append(record(pid, status=status, error=err, params=params, index=len(out)))
                continue
            t = base_ms * (i + 1) * (j + 1)
            factors = rounds.get(s) if isinstance(rounds, dict) else rounds
            out.append(record(pid, samples_ms=[t * p for p in pattern], params=params,
                              rounds_ms=None if factors is None else
                              [[t * f * p for p in pattern] for f in factors],
                              index=len(out), metrics={
                                  "tokens_per_s": 1000.0 * L / t,
                                  "mem_peak_allocated_bytes": L * 2**20 * (i + 1),
                                  "flops_per_step": 1e9 * L, "mfu": 0.01 * (i + 1)}))
    return out


def timed(point_id: str, p50: float | None, ci=None, mem: float | None = None, *,
          params: dict, index: int = 0, status: str = "ok", label: str | None = None,
          flags=None, warnings=()) -> dict:
    """A point whose latency is given outright: p50 (ms), its 95% CI ``(low, high)`` and peak
    memory (``mem_peak_allocated_bytes``), for hand-computed answers. ``flags`` (a list of
    badge names) is left out when None, as in a record from before flags existed."""
    metrics = {"latency_ms_p50": p50, "mem_peak_allocated_bytes": mem}
    if ci is not None:
        metrics.update(latency_ms_p50_ci_low=ci[0], latency_ms_p50_ci_high=ci[1])
    rec = record(point_id, status=status, index=index, label=label, params=params, metrics=metrics,
                 error=None if status == "ok" else f"{status} here")
    rec["warnings"] = list(warnings)
    if flags is not None:
        rec["flags"] = list(flags)
    return rec


def profile(shares: dict, ops: dict | None = None, *, step_ms: float = 12.0,
            trace: str | None = "workers/p/trace.json.gz", top_ops=None) -> dict:
    """``profile_*`` metrics of a profiled pass: region ``shares`` (the other regions 0),
    ``ops`` region -> [(operator, share)], a trace path relative to the run folder."""
    regions = ("embedding", "attention", "ffn", "norm", "lm_head", "loss", "forward_other",
               "backward", "optimizer", "communication", "other")
    out = {f"profile_share_{r}": float(shares.get(r, 0.0)) for r in regions}
    out.update(profile_steps=3, profile_time_basis="cpu", profile_step_ms=step_ms,
               profile_trace=trace, profile_memory_snapshot=None, profile_kernels=None,
               profile_region_ops={r: [{"name": n, "share": s} for n, s in listed]
                                   for r, listed in (ops or {}).items()},
               profile_top_ops=list(top_ops or [{"name": "aten::mm", "self_ms": 4.0,
                                                 "share": 0.4, "calls": 12.0}]))
    return out


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile in closed form for 1, 2 and 4 degrees of freedom (the inverse CDFs
    of W. T. Shaw, 2006): df 1 is Cauchy, ``tan(pi (p - 1/2))``; df 2 inverts
    ``F(t) = 1/2 + t / (2 sqrt(2 + t^2))``: ``t = a sqrt(2 / (1 - a^2))`` with ``a = 2p - 1``;
    df 4: ``t = 2 sqrt(q - 1)`` with ``q = cos(arccos(sqrt(b)) / 3) / sqrt(b)``,
    ``b = 4 p (1 - p)``, signed as ``p - 1/2`` (tables: t(0.975, 1) = 12.706,
    t(0.975, 2) = 4.303, t(0.975, 4) = 2.776)."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        a = 2 * p - 1
        return a * math.sqrt(2 / (1 - a * a))
    if df == 4:
        b = 4 * p * (1 - p)
        q = math.cos(math.acos(math.sqrt(b)) / 3) / math.sqrt(b)
        return math.copysign(2 * math.sqrt(q - 1), p - 0.5)
    raise ValueError(f"no closed form here for {df} degrees of freedom")


def sd(values) -> float:
    """The sample standard deviation (n - 1)."""
    m = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def log_t(values, p: float = 0.975) -> tuple[float, float, float]:
    """(geometric mean, low, high) of two or three positive values: Student's t on their logs,
    ``exp(mean ± t(p, n - 1) sd / sqrt(n))``."""
    logs = [math.log(v) for v in values]
    m = math.fsum(logs) / len(logs)
    h = t_quantile(p, len(logs) - 1) * sd(logs) / math.sqrt(len(logs))
    return math.exp(m), math.exp(m - h), math.exp(m + h)
