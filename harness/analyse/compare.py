"""Compare two runs point by point and give a verdict per metric and overall.

Input: two run folders (or their records, see ``compare_records``). Output: a ``Comparison``
with one ``PointResult`` per point (matched, new or missing), rendered as GitHub-flavoured
Markdown (``harness.analyse.compare_markdown.to_markdown``) and as a JSON verdict
(``Comparison.to_json``).

Rules:
  * timing: the ratio current / base and its interval (``harness.records.pairs``), decided
    against the threshold as its resolution: ``regression`` when the whole interval lies above
    ``1 + threshold``, ``improvement`` when it lies below ``1 / (1 + threshold)``, ``ok`` when it
    lies inside that band (equal within the threshold), else ``inconclusive`` -- with the
    smallest difference the interval could have decided and what would decide it.
    - paired (``gate --ab``, ``gate --rev``: both sides measured round by round, close
      together): the log ratio of the two sides' medians per round, t over the pairs
      (``pairs.paired``; at the sequential look the gate stopped at);
    - two runs measured apart (``tbench compare RUN RUN``, ``gate --baseline``): Welch's t on
      the log round medians (``pairs.independent``); one round on a side has no spread between
      processes to judge against: inconclusive, saying so.
  * deterministic metrics (FLOPs, model-state bytes, padding efficiency, peak allocated bytes):
    equal within ``DETERMINISTIC_RTOL`` (relative) -> "ok", otherwise better/worse by direction.
  * status: ok -> failure is a regression, failure -> ok an improvement, another change
    between failure kinds is "inconclusive".
  * runs whose ``run.json`` fingerprints differ are "incomparable" unless ``force``.
  * ``timing_informational``: timing verdicts are shown but never fail the comparison.

Explanations: a regressed or improved point whose two records both hold a profiled pass
(``profile_share_*``) gets ``PointResult.explanation``: the ``EXPLAIN_REGIONS`` regions whose
time changed most, in ms of the timed median (``regions.region_ms``) and percent, each with the
operators inside it that changed most (``profile_region_ops``), an operator that left the
region's top list and one that entered it written ``old → new``:
"attention +2.10 ms (+38%): aten::_scaled_dot_product_flash_attention_for_cpu → aten::bmm".
Never imports torch.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from harness.analyse.regions import region_ms
from harness.records import BadInput, RunFolder, pairs

DETERMINISTIC_RTOL = 1e-9
TIMING_METRICS = {"latency_ms_p50": "lower"}
DETERMINISTIC_METRICS = {
    "flops_per_step": "lower",
    "model_state_bytes_max": "lower",
    "padding_efficiency": "higher",
    "mem_peak_allocated_bytes": "lower",
}
DEFAULT_METRICS = tuple(TIMING_METRICS) + tuple(DETERMINISTIC_METRICS)
EXPLAIN_REGIONS, EXPLAIN_OPS = 2, 2
_RANK = {"regression": 3, "inconclusive": 2, "improvement": 1, "ok": 0}
VERDICT_OF = {"slower": "regression", "faster": "improvement", "equal": "ok",
              "undecided": "inconclusive"}


@dataclass
class MetricResult:
    metric: str
    kind: str  # "timing" | "deterministic"
    base: float | None
    current: float | None
    ratio: float | None  # current / base
    verdict: str  # regression | improvement | inconclusive | ok
    ci_low: float | None = None  # the timing ratio's interval
    ci_high: float | None = None
    n: int | None = None  # pairs, or rounds per side
    informational: bool = False
    note: str = ""


@dataclass
class PointResult:
    point_id: str
    label: str
    presence: str  # matched | new | missing
    base_status: str | None
    current_status: str | None
    verdict: str
    metrics: list[MetricResult] = field(default_factory=list)
    note: str = ""
    explanation: str = ""  # where the time changed, from both profiled passes


@dataclass
class Comparison:
    verdict: str  # regression | inconclusive | improvement | ok | incomparable
    threshold: float
    confidence: float
    points: list[PointResult]
    base_fingerprint: str | None = None
    current_fingerprint: str | None = None
    forced: bool = False
    timing_informational: bool = False
    method: str = "independent"  # paired | independent

    @property
    def exit_code(self) -> int:
        return {"regression": 1, "incomparable": 2}.get(self.verdict, 0)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.points:
            key = p.presence if p.presence != "matched" else p.verdict
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    def to_json(self) -> str:
        body = asdict(self)
        body["counts"] = self.counts()
        body["exit_code"] = self.exit_code
        return json.dumps(body, sort_keys=True, indent=2, allow_nan=False) + "\n"


def round_medians(rec: dict) -> list[float]:
    """The per-round medians of a record, [] for none."""
    medians = (rec.get("metrics") or {}).get("latency_ms_round_p50s") or []
    return [float(m) for m in medians if m]


def timing_result(ratio: pairs.Ratio, base: float | None, current: float | None,
                  why_undecided: str) -> MetricResult:
    """A timing MetricResult from a decided (or undecided) ratio."""
    note = f"{ratio.n} {'pairs' if ratio.method == 'paired' else 'rounds a side'}"
    if ratio.look:
        note += f", sequential look {ratio.look} ({ratio.confidence:.2%} interval)"
    if not ratio.decided:
        note += "; " + (f"could resolve differences ≥ {ratio.resolvable:.0%}; " if ratio.resolvable
                        else "") + why_undecided
    return MetricResult("latency_ms_p50", "timing", base, current, ratio.estimate,
                        VERDICT_OF[ratio.verdict], ratio.low, ratio.high, ratio.n, note=note)


def timing_independent(base: dict, current: dict, threshold: float,
                       confidence: float = pairs.CONFIDENCE) -> MetricResult:
    """Two records measured apart: Welch on their log round medians (a record from before
    rounds: its headline, one value -- undecided, but its ratio shown)."""
    mb, mc = (round_medians(r) or [v for v in [(r.get("metrics") or {}).get("latency_ms_p50")] if v]
              for r in (base, current))
    ratio = pairs.independent(mb, mc, threshold, confidence)
    b, c = ((base.get("metrics") or {}).get("latency_ms_p50"),
            (current.get("metrics") or {}).get("latency_ms_p50"))
    why = ("one round on a side: no spread between processes to judge against"
           if min(len(mb), len(mc)) < 2 else
           "more rounds would decide, or measure both in one run (gate --ab / --rev pair them)")
    return timing_result(ratio, b, c, why)


def timing_paired(base: dict, current: dict, threshold: float, look: int | None = None,
                  confidence: float = pairs.CONFIDENCE) -> MetricResult:
    """Two records measured round by round together: the log ratio of each round's medians."""
    mb, mc = round_medians(base), round_medians(current)
    logs = [math.log(c / b) for b, c in zip(mb, mc)]
    ratio = pairs.paired(logs, threshold, confidence, look)
    b, c = ((base.get("metrics") or {}).get("latency_ms_p50"),
            (current.get("metrics") or {}).get("latency_ms_p50"))
    return timing_result(ratio, b, c, "more rounds would decide (gate --rounds, or auto)")


def _ratio(base, current) -> float | None:
    if base is None or current is None or base == 0:
        return None
    return current / base


def deterministic_verdict(metric: str, base, current) -> MetricResult:
    direction = DETERMINISTIC_METRICS[metric]
    if base is None or current is None:
        note = "" if base is None and current is None else "available on one side only"
        return MetricResult(metric, "deterministic", base, current, None, "ok", note=note)
    if math.isclose(base, current, rel_tol=DETERMINISTIC_RTOL, abs_tol=0.0):
        return MetricResult(metric, "deterministic", base, current, _ratio(base, current), "ok")
    worse = current > base if direction == "lower" else current < base
    return MetricResult(metric, "deterministic", base, current, _ratio(base, current),
                        "regression" if worse else "improvement")


def _status_verdict(base: str, current: str) -> str:
    if base == current:
        return "ok"
    if base == "ok":
        return "regression"
    if current == "ok":
        return "improvement"
    return "inconclusive"


def compare_pair(base: dict, current: dict, metrics, threshold: float,
                 timing_informational: bool = False, paired: bool = False,
                 look: int | None = None, timing: pairs.Ratio | None = None) -> PointResult:
    """Compare two records of the same point (``paired``: measured round by round together;
    ``timing``: the ratio already decided by the run that measured both)."""
    bs, cs = base.get("status"), current.get("status")
    out = PointResult(base.get("point_id", "?"), current.get("label") or base.get("label", ""),
                      "matched", bs, cs, _status_verdict(bs, cs))
    if bs != cs:
        out.note = f"status {bs} -> {cs}"
        return out
    if bs != "ok":
        return out
    for m in metrics:
        if m in TIMING_METRICS:
            if timing is not None:
                r = timing_result(timing, (base.get("metrics") or {}).get("latency_ms_p50"),
                                  (current.get("metrics") or {}).get("latency_ms_p50"),
                                  "more rounds (or budget) would decide")
            elif paired:
                r = timing_paired(base, current, threshold, look)
            else:
                r = timing_independent(base, current, threshold)
            r.informational = timing_informational
        else:
            r = deterministic_verdict(m, (base.get("metrics") or {}).get(m),
                                      (current.get("metrics") or {}).get(m))
        out.metrics.append(r)
    counted = [r.verdict for r in out.metrics if not r.informational]
    out.verdict = max(counted, key=_RANK.__getitem__, default="ok")
    if any(r.verdict in ("regression", "improvement") for r in out.metrics):
        out.explanation = explain(base, current)
    return out


def _op_ms(rec: dict, region: str) -> dict[str, float]:
    """Operator -> ms of the timed median, for the operators listed in ``region``."""
    m = rec.get("metrics") or {}
    ops = (m.get("profile_region_ops") or {}).get(region) or []
    return {o["name"]: o["share"] * m["latency_ms_p50"] for o in ops}


def _ops_text(base: dict, current: dict, region: str) -> str:
    """The operators of ``region`` whose time changed most; ``old → new`` first when the
    region's top operator left its list and the new top operator was not in it (a kernel
    swap: flash attention -> bmm + softmax)."""
    b, c = _op_ms(base, region), _op_ms(current, region)
    delta = {n: c.get(n, 0.0) - b.get(n, 0.0) for n in sorted(set(b) | set(c))}
    order = [n for n in sorted(delta, key=lambda n: -abs(delta[n])) if abs(delta[n]) >= 0.005]
    b_top, c_top = (max((n for n in ops if n != "(python)"), key=ops.get, default=None)
                    for ops in (b, c))
    if b_top and c_top and b_top not in c and c_top not in b:
        rest = [n for n in order if n not in (b_top, c_top)][:EXPLAIN_OPS - 1]
        return f"{b_top} → {c_top}" + "".join(f", {n} {delta[n]:+.2f} ms" for n in rest)
    return ", ".join(f"{n} {delta[n]:+.2f} ms" for n in order[:EXPLAIN_OPS])


def explain(base: dict, current: dict) -> str:
    """Where the time changed between two profiled records of one point (module docstring);
    "" unless both were profiled."""
    b, c = region_ms(base), region_ms(current)
    if not b or not c:
        return ""
    delta = {r: c.get(r, 0.0) - b.get(r, 0.0) for r in dict.fromkeys([*b, *c])}
    parts = []
    for r in sorted(delta, key=lambda r: -abs(delta[r]))[:EXPLAIN_REGIONS]:
        if abs(delta[r]) < 0.005:  # shows as +0.00 ms: no change worth naming
            continue
        pct = f"{delta[r] / b[r]:+.0%}" if b.get(r) else "new"
        ops = _ops_text(base, current, r)
        parts.append(f"{r} {delta[r]:+.2f} ms ({pct})" + (f": {ops}" if ops else ""))
    return "; ".join(parts)


def compare_records(base: list[dict], current: list[dict], *, threshold: float = 0.05,
                    metrics=DEFAULT_METRICS, timing_informational: bool = False,
                    key: str = "point_id", paired: bool = False,
                    look: int | None = None) -> list[PointResult]:
    """Pair records by ``key`` (the last record of a key wins) and compare each pair."""
    unknown = [m for m in metrics if m not in TIMING_METRICS and m not in DETERMINISTIC_METRICS]
    if unknown:
        allowed = ", ".join(DEFAULT_METRICS)
        raise BadInput(f"unknown metric(s) {', '.join(unknown)}; allowed: {allowed}")
    b = {r[key]: r for r in base}
    c = {r[key]: r for r in current}
    results = []
    for k in sorted(set(b) | set(c), key=str):
        if k in b and k in c:
            results.append(compare_pair(b[k], c[k], metrics, threshold, timing_informational,
                                        paired, look))
        else:
            r = b.get(k) or c[k]
            presence = "missing" if k in b else "new"
            results.append(PointResult(r.get("point_id", str(k)), r.get("label", ""), presence,
                                       b[k]["status"] if k in b else None,
                                       c[k]["status"] if k in c else None, "ok"))
    if not any(p.presence == "matched" for p in results):
        profiled = [any(region_ms(r) for r in side) for side in (base, current)]
        hint = ("; one run was profiled and the other not: measure.profile (--profile) is part "
                "of a point's id, so profile both runs or neither") if profiled[0] != profiled[1] else ""
        raise BadInput("no matched points: the two runs share no point id (different suites?)"
                       + hint)
    return results


def overall_verdict(points: list[PointResult]) -> str:
    matched = [p.verdict for p in points if p.presence == "matched"]
    return max(matched, key=_RANK.__getitem__, default="ok")


def compare_runs(base: RunFolder, current: RunFolder, *, threshold: float = 0.05,
                 metrics=DEFAULT_METRICS, force: bool = False,
                 timing_informational: bool = False) -> Comparison:
    """Compare two loaded run folders (``harness.records.read_run_folder``), measured apart."""
    points = compare_records(base.records, current.records, threshold=threshold,
                             metrics=metrics, timing_informational=timing_informational)
    bf, cf = base.run.get("fingerprint"), current.run.get("fingerprint")
    verdict = overall_verdict(points)
    if bf != cf and not force:
        verdict = "incomparable"
    return Comparison(verdict, threshold, pairs.CONFIDENCE, points, bf, cf, force,
                      timing_informational)
