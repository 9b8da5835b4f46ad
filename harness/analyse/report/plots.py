"""Figures for the HTML report, as base64 PNG strings (matplotlib, Agg backend).

Input: the run's records and the tables of ``harness.analyse.report.tables.build_tables``.
Output: ``figures(records, tables) -> list[Figure(title, png_base64)]``.
Per table with numeric columns (seq_len): throughput, latency p50 (95% CI error bars) and peak
memory against seq_len, on log2 x (latency and memory log-log); one panel per value of the
ops/kernel axis when it varies, so lines stay apart, with a row's colour the same in every
panel; legends outside the axes. Then the per-sample distributions, the
per-rank memory of parallel points and the padding efficiency.
``breakdown_figures(records, tables)``: per table, "where the time goes": one horizontal bar
per profiled point, stacked by region in ms of the timed median (``answers.region_ms``), each
region the same colour in every figure.
Deterministic: fixed size and dpi, no "Software" metadata, records in file order, so the same
records give byte-identical PNGs. Every label from the data is drawn as plain text (``_plain``:
no mathtext, no TeX), whatever ``$``, ``{`` or ``_`` it holds. Never imports torch.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from harness.analyse.regions import REGIONS, region_ms

MAX_DISTRIBUTIONS = 40
PANEL_AXES = ("ops", "kernel")  # one panel per value, when it varies: lines stay apart
PANEL_W, PANEL_H = 9.0, 5.0     # inches per panel, before the legend
LABEL_CHARS = 60                # legend width is sized for labels up to this long


@dataclass
class Figure:
    title: str
    png_base64: str


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9,
                         "axes.grid": True, "grid.alpha": 0.3, "text.usetex": False})
    return plt


def _plain(text) -> str:
    """``text`` as matplotlib draws it literally: an escaped ``$`` never starts mathtext (and
    ``\\$`` shows as ``$``), and a leading ``_`` (which hides a legend entry) gets a space."""
    text = str(text).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _encode(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches=None)
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _metric(rec, name):
    return None if rec is None or rec.get("status") != "ok" else (rec.get("metrics") or {}).get(name)


@dataclass
class Series:
    label: str
    panel: str | None  # the value of the panel axis (ops, kernel) when it varies
    xs: list[float]
    ys: list[float]
    lows: list[float]   # the 95% CI of y, where the records carry one (else y)
    highs: list[float]


def _panel_axis(table) -> str | None:
    for axis in PANEL_AXES:
        if len({str((r.get("params") or {}).get(axis)) for r in table.records}) > 1:
            return axis
    return None


def _series(table, name, scale=1.0) -> list[Series]:
    """Per row: the ok cells of one metric, divided by ``scale``; with the latency CI for
    ``latency_ms_p50``."""
    by_id = {r.get("point_id"): r for r in table.records}
    axis = _panel_axis(table)
    out = []
    for label, cells in table.rows:
        recs = [by_id.get(c.point_id) for c in cells]
        panel = next((str(r["params"].get(axis)) for r in recs if r and axis), None)
        s = Series(label, panel, [], [], [], [])
        for col, rec in zip(table.columns, recs):
            y = _metric(rec, name)
            if y is None:
                continue
            lo, hi = (_metric(rec, f"{name}_ci_low"), _metric(rec, f"{name}_ci_high"))
            s.xs.append(float(col))
            s.ys.append(y / scale)
            s.lows.append((lo if lo is not None else y) / scale)
            s.highs.append((hi if hi is not None else y) / scale)
        out.append(s)
    return out


def _legend_width(labels) -> float:
    return 0.8 + 0.075 * min(LABEL_CHARS, max((len(str(x)) for x in labels), default=0))


def _legend(ax) -> None:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _frame(plt, panels: int, labels):
    """A figure of ``panels`` stacked axes, each PANEL_W x PANEL_H inches, with room on the
    right for a legend outside the axes (fixed margins: the same data, the same pixels)."""
    width, height = PANEL_W + _legend_width(labels), PANEL_H * panels
    fig, axes = plt.subplots(panels, 1, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.9 / width, right=(PANEL_W - 0.2) / width, bottom=0.7 / height,
                        top=1 - 0.45 / height, hspace=1.1 / PANEL_H)
    return fig, [a for (a,) in axes]


def _line_plot(table, name, ylabel, scale=1.0, logy=False) -> str | None:
    """One line per row against seq_len (log2 x), one panel per value of the ops/kernel axis."""
    series = [s for s in _series(table, name, scale) if s.xs]
    if logy:
        series = [s for s in series if all(y > 0 for y in s.ys)]
    if not series:
        return None
    plt = _pyplot()
    from matplotlib.ticker import LogFormatter, NullLocator

    axis = _panel_axis(table)
    panels = list(dict.fromkeys(s.panel for s in series))
    fig, axes = _frame(plt, len(panels), [s.label for s in series])
    colours = _colours([_without(s.label, s.panel) for s in series])
    cols = sorted({x for s in series for x in s.xs})
    for ax, panel in zip(axes, panels):
        for s in (s for s in series if s.panel == panel):
            colour, style = colours[_without(s.label, s.panel)]
            err = [[y - lo for y, lo in zip(s.ys, s.lows)], [hi - y for y, hi in zip(s.ys, s.highs)]]
            ax.errorbar(s.xs, s.ys, yerr=err if any(map(any, err)) else None, marker="o",
                        capsize=3, color=colour,
                        linestyle=style, label=_plain(s.label))
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(LogFormatter())  # 6, 10, 20: no mathtext powers
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        ax.set_xticks(cols, [_plain(f"{c:g}") for c in cols])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(_plain(table.column_axis))
        ax.set_ylabel(ylabel)
        if axis:
            ax.set_title(_plain(f"{axis} = {panel}"))
        _legend(ax)
    return _encode(fig)


def _without(label: str, panel: str | None) -> str:
    """A row label less its panel part: the line's colour, the same in every panel."""
    parts = label.split(" · ")
    return " · ".join(p for p in parts if p != panel) if panel in parts else label


def _colours(keys) -> dict:
    """A colour and line style per key, in order of first appearance."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    styles = ("-", "--", ":", "-.")
    return {k: (palette(i % 10), styles[(i // 10) % len(styles)])
            for i, k in enumerate(dict.fromkeys(keys))}


def _distributions(records) -> str | None:
    pts = [r for r in records if r.get("status") == "ok" and r.get("samples_ms")]
    if not pts:
        return None
    pts = pts[:MAX_DISTRIBUTIONS]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(PANEL_W, max(3.0, 0.3 * len(pts) + 1)))
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    horizontal = {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}
    ax.boxplot([r["samples_ms"] for r in pts], widths=0.6, **horizontal)
    ax.set_yticks(range(1, len(pts) + 1), [_plain(str(r.get("label", r["point_id"]))[:60]) for r in pts],
                  fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("step time per sample (ms)")
    fig.tight_layout()
    return _encode(fig)


def _ranks(records) -> list[Figure]:
    out = []
    for r in records:
        ranks = r.get("ranks") or []
        if r.get("status") != "ok" or not ranks:
            continue
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(PANEL_W, 4.0))
        keys = ("param_bytes", "grad_bytes", "optim_bytes", "mem_peak_bytes")
        width = 0.8 / len(keys)
        for i, k in enumerate(keys):
            ax.bar([n + i * width for n in range(len(ranks))],
                   [(x.get(k) or 0) / 2**20 for x in ranks], width=width, label=k)
        ax.set_xticks([n + 0.4 - width / 2 for n in range(len(ranks))],
                      [_plain(f"rank {x.get('rank', n)}") for n, x in enumerate(ranks)])
        ax.set_ylabel("MiB")
        ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(Figure(f"Per-rank memory: {r.get('label', r['point_id'])}", _encode(fig)))
    return out


def _padding(records) -> str | None:
    pts = [r for r in records if "padding" in (r.get("params") or {})
           and _metric(r, "padding_efficiency") is not None]
    if len({str(r["params"]["padding"]) for r in pts}) < 2 and not any(
            _metric(r, "padding_efficiency") < 1 for r in pts):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(PANEL_W, max(3.0, 0.3 * len(pts) + 1)))
    ax.barh(range(len(pts)), [_metric(r, "padding_efficiency") for r in pts])
    ax.set_yticks(range(len(pts)), [_plain(str(r.get("label", r["point_id"]))[:60]) for r in pts],
                  fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_xlabel("padding efficiency (real tokens / processed tokens)")
    fig.tight_layout()
    return _encode(fig)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bars(table, by_id: dict) -> list[tuple[str, dict[str, float]]]:
    """(bar label, region -> ms) per profiled point of ``table``, rows then columns."""
    out = []
    for label, cells in table.rows:
        for col, cell in zip(table.columns, cells):
            ms = region_ms(by_id.get(cell.point_id) or {})
            if ms:
                where = f" · {table.column_axis} {col}" if table.column_axis else ""
                out.append((f"{label}{where}", ms))
    return out


REGION_COLOURS = {"attention": "tab:blue", "ffn": "tab:orange", "norm": "tab:green",
                  "embedding": "tab:purple", "lm_head": "tab:brown", "loss": "tab:pink",
                  "forward_other": "tab:olive", "backward": "tab:red", "optimizer": "tab:cyan",
                  "communication": "#222222", "other": "tab:gray"}


def _breakdown(bars: list[tuple[str, dict[str, float]]]) -> str:
    plt = _pyplot()
    used = {r for _, ms in bars for r, t in ms.items() if t > 0}
    names = [r for r in REGIONS if r in used] + sorted(used - set(REGIONS))
    labels = [_plain(lbl[:70]) for lbl, _ in bars]
    left_in = 0.4 + 0.055 * max(len(x) for x in labels)  # room for the bar labels (7 pt)
    width = left_in + PANEL_W + _legend_width(names)
    fig, ax = plt.subplots(figsize=(width, max(1.4 + 0.32 * len(bars), 0.25 * len(names) + 0.8)))
    height = fig.get_figheight()
    fig.subplots_adjust(left=left_in / width, right=(left_in + PANEL_W - 0.2) / width,
                        bottom=0.7 / height, top=1 - 0.2 / height)
    ys = list(range(len(bars)))[::-1]  # the first bar on top
    left = [0.0] * len(bars)
    for r in names:
        widths = [ms.get(r, 0.0) for _, ms in bars]
        ax.barh(ys, widths, left=left, color=REGION_COLOURS.get(r, "#bbbbbb"), label=_plain(r))
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(ys, labels, fontsize=7)
    ax.set_xlabel("ms of the timed median (region share of the profiled step x latency p50)")
    _legend(ax)
    return _encode(fig)


def breakdown_figures(records: list[dict], tables) -> list[Figure]:
    """Per table with profiled points: the stacked "where the time goes" bars."""
    by_id = {r.get("point_id"): r for r in records}
    out = []
    for t in tables:
        bars = _bars(t, by_id)
        if bars:
            out.append(Figure(f"Where the time goes: {t.title}", _breakdown(bars)))
    return out


def figures(records: list[dict], tables) -> list[Figure]:
    out: list[Figure] = []
    for t in tables:
        if t.column_axis is None or not all(_numeric(c) for c in t.columns):
            continue
        for title, png in (
                ("Throughput (tokens/s)", _line_plot(t, "tokens_per_s", "tokens/s")),
                ("Latency p50 (ms)", _line_plot(t, "latency_ms_p50", "ms (log), 95% CI",
                                                logy=True)),
                ("Peak memory (log-log)", _line_plot(t, t.memory_metric, "MiB (log)",
                                                     scale=2**20, logy=True))):
            if png:
                out.append(Figure(f"{title}: {t.title}", png))
    dist = _distributions(records)
    if dist:
        out.append(Figure("Latency distributions (per-sample step times)", dist))
    out += _ranks(records)
    pad = _padding(records)
    if pad:
        out.append(Figure("Padding efficiency", pad))
    return out
