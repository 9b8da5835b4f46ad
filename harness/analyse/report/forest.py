"""One forest plot per group: each strategy's time against the baseline's, as its ratio and
interval on a log axis, the resolution band shaded around 1.

    figures(answers) -> [Figure | None]   one per ``harness.analyse.answers.GroupAnswer``

A strategy whose interval lies left of the band was decided faster, right of it slower, inside
it equal within the resolution; one that crosses an edge is undecided, drawn hollow. The
baseline sits at 1 with no interval. Deterministic like every report figure; never torch.
"""
from __future__ import annotations

import math

from harness.analyse.report.plots import Figure, _encode, _plain, _pyplot

COLOURS = {"faster": "#1a7f37", "slower": "#b35900", "equal": "#4a6e8a", "undecided": "#777777"}
ROW_H = 0.32  # inches per strategy


def _figure(a) -> str | None:
    rows = [r for r in a.rows if r.status == "ok" and (r.ratio is None or r.ratio.estimate)]
    if len(rows) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 0.8 + ROW_H * len(rows)))
    fig.subplots_adjust(left=0.38, right=0.97, top=0.92, bottom=0.18)
    ax.axvspan(1 / (1 + a.resolution), 1 + a.resolution, color="#dddddd", zorder=0)
    ax.axvline(1.0, color="black", linewidth=0.8)
    for y, r in enumerate(reversed(rows)):
        if r.ratio is None:
            ax.plot([1.0], [y], marker="D", color="black", zorder=3)
            continue
        colour = COLOURS.get(r.ratio.verdict, "#777777")
        if r.ratio.low is not None:
            ax.plot([r.ratio.low, r.ratio.high], [y, y], color=colour, linewidth=2, zorder=2)
        hollow = r.ratio.verdict == "undecided"
        ax.plot([r.ratio.estimate], [y], marker="o", color=colour, zorder=3,
                markerfacecolor="white" if hollow else colour)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _pos: f"×{v:.3g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    values = [v for r in rows if r.ratio for v in (r.ratio.low, r.ratio.high, r.ratio.estimate) if v]
    lo, hi = min(values + [1 / (1 + a.resolution)]), max(values + [1 + a.resolution])
    pad = (math.log(hi) - math.log(lo)) * 0.08 or 0.05
    ax.set_xlim(math.exp(math.log(lo) - pad), math.exp(math.log(hi) + pad))
    ax.set_yticks(range(len(rows)), [_plain(r.label) for r in reversed(rows)])
    ax.set_xlabel(_plain(f"time / baseline's ({a.baseline}); band: equal within {a.resolution:.0%}"))
    return _encode(fig)


def figures(found) -> list[Figure | None]:
    """A figure per answer, None where it has fewer than two strategies that ran."""
    out = []
    for a in found:
        png = _figure(a)
        out.append(Figure(a.group, png) if png else None)
    return out
