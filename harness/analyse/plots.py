"""Figures for the HTML report, as base64 PNG strings (matplotlib, Agg backend).

Input: the run's records and the tables of ``harness.analyse.report.build_tables``.
Output: ``figures(records, tables) -> list[Figure(title, png_base64)]``.
Deterministic: fixed size and dpi, no "Software" metadata, records in file order, so the same
records give byte-identical PNGs. Every label from the data is drawn as plain text (``_plain``:
no mathtext, no TeX), whatever ``$``, ``{`` or ``_`` it holds. Never imports torch.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

MAX_DISTRIBUTIONS = 40


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


def _series(table, name):
    """Per row: (x values, y values) over the ok cells of one metric."""
    by_id = {r.get("point_id"): r for r in table.records}
    out = []
    for label, cells in table.rows:
        xs, ys = [], []
        for col, cell in zip(table.columns, cells):
            y = _metric(by_id.get(cell.point_id), name)
            if y is not None:
                xs.append(float(col))
                ys.append(y)
        out.append((label, xs, ys))
    return out


def _line_plot(table, name, ylabel, loglog=False) -> str | None:
    series = _series(table, name)
    if not any(xs for _, xs, _ in series):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, xs, ys in series:
        if xs:
            ax.plot(xs, ys, marker="o", label=_plain(label))
    if loglog:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
    ax.set_xlabel(_plain(table.column_axis))
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _encode(fig)


def _speedup_bars(table) -> str | None:
    if table.baseline is None or len(table.rows) < 2:
        return None
    series = _series(table, "latency_ms_p50")
    base = {x: y for lbl, xs, ys in series if lbl == table.baseline for x, y in zip(xs, ys)}
    if not base:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    cols = [float(c) for c in table.columns]
    width = 0.8 / len(series)
    for i, (label, xs, ys) in enumerate(series):
        pos = [cols.index(x) + i * width for x, y in zip(xs, ys) if x in base]
        val = [base[x] / y for x, y in zip(xs, ys) if x in base]
        ax.bar(pos, val, width=width, label=_plain(label))
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cols))], [_plain(c) for c in table.columns])
    ax.set_xlabel(_plain(table.column_axis))
    ax.set_ylabel(_plain(f"speed-up vs {table.baseline}"))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _encode(fig)


def _distributions(records) -> str | None:
    pts = [r for r in records if r.get("status") == "ok" and r.get("samples_ms")]
    if not pts:
        return None
    pts = pts[:MAX_DISTRIBUTIONS]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, max(2.4, 0.3 * len(pts) + 1)))
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
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
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
    fig, ax = plt.subplots(figsize=(6.4, max(2.4, 0.3 * len(pts) + 1)))
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


def figures(records: list[dict], tables) -> list[Figure]:
    out: list[Figure] = []
    for t in tables:
        if t.column_axis is None or not all(_numeric(c) for c in t.columns):
            continue
        for title, png in (
                ("Throughput (tokens/s)", _line_plot(t, "tokens_per_s", "tokens/s")),
                ("Latency p50 (ms)", _line_plot(t, "latency_ms_p50", "ms")),
                ("Peak memory (log-log)", _line_plot(t, t.memory_metric, "bytes", loglog=True)),
                ("Speed-up vs baseline", _speedup_bars(t))):
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
