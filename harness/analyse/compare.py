"""Compare two runs point by point and give a verdict per metric and overall.

Input: two run folders (or their records, see ``compare_records``). Output: a ``Comparison``
with one ``PointResult`` per point id (matched, new or missing), rendered as GitHub-flavoured
Markdown (``to_markdown``) and as a JSON verdict (``to_json``).

Rules (docs/DESIGN.md, issues 5 and 10):
  * timing, points measured in >= 2 rounds (fresh worker processes) on both sides: a
    regression needs BOTH the ratio of the means of round medians above ``1 + threshold`` AND
    a one-sided Welch t-test on the log round medians with p < ``alpha`` (``rounds_verdict``):
    the noise judged against is the spread between processes, so drift between processes and
    minutes cannot pass for a change. Improvements are symmetric.
  * timing, one round on a side (``timing_verdict``, from the per-sample ``samples_ms``; noted
    in the row, as drift between processes is unseen): a regression needs BOTH
    the median ratio current/base above ``1 + threshold`` AND a one-sided Mann-Whitney U test
    (current slower) with p < ``alpha`` (0.01). Improvements are symmetric (ratio below
    ``1 - threshold`` and the other one-sided test). Only one of the two -> "inconclusive";
    fewer than ``MIN_SAMPLES`` samples on a side -> "inconclusive".
  * deterministic metrics (FLOPs, model-state bytes, padding efficiency, peak allocated bytes):
    equal within ``DETERMINISTIC_RTOL`` (relative) -> "ok", otherwise better/worse by direction.
  * status: ok -> failure is a regression, failure -> ok an improvement, another change
    between failure kinds is "inconclusive".
  * runs whose ``run.json`` fingerprints differ are "incomparable" unless ``force``.
  * ``timing_informational``: timing verdicts are shown but never fail the comparison.

Explanations (issue 12): a regressed or improved point whose two records both hold a profiled
pass (``profile_share_*``) gets ``PointResult.explanation``: the ``EXPLAIN_REGIONS`` regions
whose time changed most, in ms of the timed median (``answers.region_ms``) and percent, each
with the operators inside it that changed most (``profile_region_ops``), an operator that left
the region's top list and one that entered it written ``old → new``:
"attention +2.10 ms (+38%): aten::_scaled_dot_product_flash_attention_for_cpu → aten::bmm".
Never imports torch.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from scipy.stats import mannwhitneyu, ttest_ind

from harness.analyse.regions import region_ms
from harness.records import BadInput, RunFolder, stats

MIN_SAMPLES = 5
ALPHA = 0.01
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


@dataclass
class MetricResult:
    metric: str
    kind: str  # "timing" | "deterministic"
    base: float | None
    current: float | None
    ratio: float | None
    p_value: float | None
    verdict: str  # regression | improvement | inconclusive | ok
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
    explanation: str = ""  # where the time changed, from both profiled passes (issue 12)


@dataclass
class Comparison:
    verdict: str  # regression | inconclusive | improvement | ok | incomparable
    threshold: float
    alpha: float
    points: list[PointResult]
    base_fingerprint: str | None = None
    current_fingerprint: str | None = None
    forced: bool = False
    timing_informational: bool = False

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


def timing_verdict(base_ms, current_ms, threshold: float, alpha: float = ALPHA) -> MetricResult:
    """The two-condition decision on per-sample times (current vs base, lower is better)."""
    n_b, n_c = len(base_ms), len(current_ms)
    if n_b < MIN_SAMPLES or n_c < MIN_SAMPLES:
        b = stats.median(base_ms) if n_b else None
        c = stats.median(current_ms) if n_c else None
        return MetricResult("latency_ms_p50", "timing", b, c, _ratio(b, c), None, "inconclusive",
                            note=f"too few samples ({n_b} vs {n_c}; need {MIN_SAMPLES} per side)")
    b, c = stats.median(base_ms), stats.median(current_ms)
    ratio = _ratio(b, c)
    p_slower = _mwu(current_ms, base_ms, "greater")
    p_faster = _mwu(current_ms, base_ms, "less")
    verdict, p = decide(ratio, p_slower, p_faster, threshold, alpha)
    return MetricResult("latency_ms_p50", "timing", b, c, ratio, p, verdict)


def decide(ratio: float, p_slower: float, p_faster: float, threshold: float,
           alpha: float) -> tuple[str, float]:
    """Both conditions: the ratio beyond ``1 ± threshold`` AND the one-sided p below ``alpha``
    -> regression / improvement; only one of them -> inconclusive; neither -> ok."""
    slower, faster = ratio > 1 + threshold, ratio < 1 - threshold
    if slower and p_slower < alpha:
        return "regression", p_slower
    if faster and p_faster < alpha:
        return "improvement", p_faster
    if slower or faster or min(p_slower, p_faster) < alpha:
        return "inconclusive", (p_slower if ratio >= 1 else p_faster)
    return "ok", min(p_slower, p_faster)


def round_medians(rec: dict) -> list[float]:
    """The per-round medians of a record (``metrics.latency_ms_round_p50s``), [] for one round."""
    medians = (rec.get("metrics") or {}).get("latency_ms_round_p50s") or []
    return [float(m) for m in medians if m is not None] if len(medians) >= 2 else []


def rounds_verdict(base_medians, current_medians, threshold: float,
                   alpha: float = ALPHA) -> MetricResult:
    """The two-condition decision on round medians (each round a fresh worker process): the
    ratio of the means of round medians beyond ``1 ± threshold`` AND a one-sided Welch t-test
    on the logarithms of the round medians with p < ``alpha``. The noise it judges against is
    the spread between processes, drift included, not the spread of one process's samples."""
    b, c = stats.mean(base_medians), stats.mean(current_medians)
    ratio = _ratio(b, c)
    lb, lc = [math.log(x) for x in base_medians], [math.log(x) for x in current_medians]
    p_slower, p_faster = _welch(lc, lb, "greater"), _welch(lc, lb, "less")
    verdict, p = decide(ratio, p_slower, p_faster, threshold, alpha)
    note = f"{len(base_medians)} vs {len(current_medians)} rounds"
    return MetricResult("latency_ms_p50", "timing", b, c, ratio, p, verdict, note=note)


def _welch(x, y, alternative: str) -> float:
    if stats.stdev(x) == 0 and stats.stdev(y) == 0:  # constant rounds: the means decide alone
        diff = stats.mean(x) - stats.mean(y)
        if diff == 0:
            return 1.0
        return 0.0 if (diff > 0) == (alternative == "greater") else 1.0
    return float(ttest_ind(x, y, equal_var=False, alternative=alternative).pvalue)


def timing_metric(base: dict, current: dict, threshold: float) -> MetricResult:
    """Round-level rule when both records have >= 2 rounds, else the per-sample rule (with a
    note: one process per side cannot show drift between processes)."""
    mb, mc = round_medians(base), round_medians(current)
    if mb and mc:
        return rounds_verdict(mb, mc, threshold)
    r = timing_verdict(base.get("samples_ms") or [], current.get("samples_ms") or [], threshold)
    r.note = r.note or "one round on a side: samples of one process, drift between processes unseen"
    return r


def _mwu(x, y, alternative: str) -> float:
    if len(set(x)) == 1 and set(x) == set(y):
        return 1.0  # identical constant samples: no evidence either way
    return float(mannwhitneyu(x, y, alternative=alternative).pvalue)


def _ratio(base, current) -> float | None:
    if base is None or current is None or base == 0:
        return None
    return current / base


def deterministic_verdict(metric: str, base, current) -> MetricResult:
    direction = DETERMINISTIC_METRICS[metric]
    if base is None or current is None:
        note = "" if base is None and current is None else "available on one side only"
        return MetricResult(metric, "deterministic", base, current, None, None, "ok", note=note)
    if math.isclose(base, current, rel_tol=DETERMINISTIC_RTOL, abs_tol=0.0):
        return MetricResult(metric, "deterministic", base, current, _ratio(base, current), None, "ok")
    worse = current > base if direction == "lower" else current < base
    return MetricResult(metric, "deterministic", base, current, _ratio(base, current), None,
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
                 timing_informational: bool = False) -> PointResult:
    """Compare two records of the same point."""
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
            r = timing_metric(base, current, threshold)
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
                    key: str = "point_id") -> list[PointResult]:
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
            results.append(compare_pair(b[k], c[k], metrics, threshold, timing_informational))
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
    """Compare two loaded run folders (see ``harness.records.read_run_folder``)."""
    points = compare_records(base.records, current.records, threshold=threshold,
                             metrics=metrics, timing_informational=timing_informational)
    bf, cf = base.run.get("fingerprint"), current.run.get("fingerprint")
    verdict = overall_verdict(points)
    if bf != cf and not force:
        verdict = "incomparable"
    return Comparison(verdict, threshold, ALPHA, points, bf, cf, force, timing_informational)


def _fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.4g}"
    return f"{int(x):,}" if isinstance(x, (int, float)) else str(x)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _change(p: PointResult) -> float:
    """Size of the point's largest change: |log ratio| over its counted metrics."""
    logs = [abs(math.log(r.ratio)) for r in p.metrics if r.ratio and r.ratio > 0]
    return max(logs, default=0.0)


def ordered(points: list[PointResult]) -> list[PointResult]:
    """Rows by verdict (regression, inconclusive, improvement, ok), then by size of change."""
    def key(p):
        verdict = p.presence if p.presence != "matched" else p.verdict
        return (-_RANK.get(verdict, 2), -_change(p))
    return sorted(points, key=key)


def _constant_metrics(points: list[PointResult]) -> set[str]:
    """Deterministic metrics with one value for every point of both runs (padding efficiency
    1.0 in a suite without padding): rows of them are left out unless they changed."""
    values: dict[str, set] = {}
    for p in points:
        for r in p.metrics:
            if r.kind == "deterministic":
                values.setdefault(r.metric, set()).update({r.base, r.current})
    return {m for m, v in values.items() if len(v) == 1}


def to_markdown(cmp: Comparison) -> str:
    """A GFM summary: verdict line, counts, then one row per (point, metric) worth showing."""
    lines = [f"## tbench compare: **{cmp.verdict.upper()}**", ""]
    lines.append(f"threshold {cmp.threshold:.1%}; timing: Welch t-test on the log round medians "
                 f"(Mann-Whitney U on samples for single-round points), one-sided p < {cmp.alpha}"
                 + (", timing informational only" if cmp.timing_informational else ""))
    lines.append("")
    lines.append("counts: " + ", ".join(f"{k} {v}" for k, v in cmp.counts().items()))
    if cmp.base_fingerprint != cmp.current_fingerprint:
        lines += ["", f"environment fingerprints differ: `{_cell(cmp.base_fingerprint)}` vs "
                      f"`{_cell(cmp.current_fingerprint)}`"
                  + (" (forced)" if cmp.forced else " — results are incomparable; use --force")]
    lines += ["", "| point | metric | base | current | ratio | p | verdict |",
              "|---|---|---:|---:|---:|---:|---|"]
    constant = _constant_metrics(cmp.points)
    for p in ordered(cmp.points):
        label = _cell(f"{p.label} (`{p.point_id}`)")
        if p.presence != "matched" or p.base_status != p.current_status or p.base_status != "ok":
            what = p.presence if p.presence != "matched" else "status"
            lines.append(f"| {label} | {what} | {_cell(p.base_status or '—')} | "
                         f"{_cell(p.current_status or '—')} | | | {p.verdict if what == 'status' else what} |")
            continue
        for r in p.metrics:
            if r.base is None and r.current is None:
                continue  # unavailable on both sides (e.g. GPU memory on CPU)
            if r.metric in constant and r.verdict == "ok":
                continue  # the same everywhere in both runs: says nothing about this suite
            verdict = r.verdict + (" (info)" if r.informational else "")
            if r.note:
                verdict += f": {_cell(r.note)}"
            ratio = "—" if r.ratio is None else f"{r.ratio:.3f}"
            pv = "—" if r.p_value is None else f"{r.p_value:.2g}"
            lines.append(f"| {label} | {r.metric} | {_fmt(r.base)} | {_fmt(r.current)} | "
                         f"{ratio} | {pv} | {verdict} |")
    explained = [p for p in ordered(cmp.points) if p.explanation]
    if explained:
        lines += ["", "Where the time changed (profiled passes; ms of the timed median):", ""]
        lines += [f"- {_cell(p.label)} (`{p.point_id}`), {p.verdict}: {_cell(p.explanation)}"
                  for p in explained]
    return "\n".join(lines) + "\n"
