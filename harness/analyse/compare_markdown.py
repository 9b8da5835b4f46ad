"""A ``Comparison`` as GitHub-flavoured Markdown: the verdict, the rule, counts, one row per
(point, metric) worth showing -- regressions first, then by size of change -- and where the
time changed for the points whose both runs were profiled. Never imports torch."""
from __future__ import annotations

import math

from harness.analyse.compare import Comparison, PointResult, _RANK

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
    how = ("the ratio of each round's medians, both sides measured round by round together"
           if cmp.method == "paired" else "Welch's t on the log round medians of two runs "
           "measured apart")
    lines.append(f"threshold {cmp.threshold:.1%}: a change must lie wholly beyond it to count, "
                 f"wholly inside it is equal; timing: {how}, {cmp.confidence:.0%} interval"
                 + (", timing informational only" if cmp.timing_informational else ""))
    lines.append("")
    lines.append("counts: " + ", ".join(f"{k} {v}" for k, v in cmp.counts().items()))
    if cmp.base_fingerprint != cmp.current_fingerprint:
        lines += ["", f"environment fingerprints differ: `{_cell(cmp.base_fingerprint)}` vs "
                      f"`{_cell(cmp.current_fingerprint)}`"
                  + (" (forced)" if cmp.forced else " — results are incomparable; use --force")]
    lines += ["", "| point | metric | base | current | ratio [interval] | verdict |",
              "|---|---|---:|---:|---:|---|"]
    constant = _constant_metrics(cmp.points)
    for p in ordered(cmp.points):
        label = _cell(f"{p.label} (`{p.point_id}`)")
        if p.presence != "matched" or p.base_status != p.current_status or p.base_status != "ok":
            what = p.presence if p.presence != "matched" else "status"
            lines.append(f"| {label} | {what} | {_cell(p.base_status or '—')} | "
                         f"{_cell(p.current_status or '—')} | | {p.verdict if what == 'status' else what} |")
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
            if r.ci_low is not None:
                ratio += f" [{r.ci_low:.3f}, {r.ci_high:.3f}]"
            lines.append(f"| {label} | {r.metric} | {_fmt(r.base)} | {_fmt(r.current)} | "
                         f"{ratio} | {verdict} |")
    explained = [p for p in ordered(cmp.points) if p.explanation]
    if explained:
        lines += ["", "Where the time changed (profiled passes; ms of the timed median):", ""]
        lines += [f"- {_cell(p.label)} (`{p.point_id}`), {p.verdict}: {_cell(p.explanation)}"
                  for p in explained]
    return "\n".join(lines) + "\n"
