"""Figures of the decode points of a run: KV-cache bytes and per-token latency against the context.

Input: the run's records (``results.jsonl``). Output: ``figures(records) -> list[Figure]``: for the
``decode`` points that ran (status ok), one line per (attention, ops, compression, precision,
batch) against ``context_len`` on log2 x: the measured KV-cache bytes (log y: dense grows in
proportion to the context, a local window stays flat) and the per-token latency p50 (log y). No
figure when fewer than two contexts were measured. Deterministic like ``harness.analyse.report.plots``,
whose frame, legend and encoding it uses; never imports torch.
"""
from __future__ import annotations

from harness.analyse.report.plots import Figure, _encode, _frame, _legend, _plain, _pyplot

LINE_PARAMS = ("attention", "ops", "compression", "precision", "batch_size")


def _lines(records: list[dict]) -> dict[str, list[tuple[int, dict]]]:
    """``label -> [(context_len, metrics)]`` of the ok decode points, sorted by context."""
    out: dict[str, list[tuple[int, dict]]] = {}
    for rec in records:
        p = rec.get("params") or {}
        if rec.get("status") != "ok" or p.get("kind") != "decode" or p.get("context_len") is None:
            continue
        label = " · ".join(f"B={p[k]}" if k == "batch_size" else str(p[k])
                           for k in LINE_PARAMS if p.get(k) is not None)
        out.setdefault(label, []).append((int(p["context_len"]), rec.get("metrics") or {}))
    return {k: sorted(v, key=lambda cm: cm[0]) for k, v in out.items()}


def _plot(lines, metric: str, ylabel: str, scale: float) -> str | None:
    series = {label: [(c, m[metric] / scale) for c, m in pts if (m.get(metric) or 0) > 0]
              for label, pts in lines.items()}
    series = {k: v for k, v in series.items() if v}
    contexts = sorted({c for pts in series.values() for c, _ in pts})
    if len(contexts) < 2:
        return None
    plt = _pyplot()
    from matplotlib.ticker import LogFormatter, NullLocator

    fig, (ax,) = _frame(plt, 1, list(series))
    for label, pts in series.items():
        ax.plot([c for c, _ in pts], [y for _, y in pts], marker="o", label=_plain(label))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    ax.set_xticks(contexts, [_plain(f"{c:g}") for c in contexts])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("context_len")
    ax.set_ylabel(ylabel)
    _legend(ax)
    return _encode(fig)


def figures(records: list[dict]) -> list[Figure]:
    lines = _lines(records)
    out = []
    for title, png in (
            ("Decode: KV-cache bytes against context (measured)",
             _plot(lines, "kv_cache_bytes", "MiB (log)", 2**20)),
            ("Decode: per-token latency p50 against context",
             _plot(lines, "per_token_latency_ms", "ms (log)", 1.0))):
        if png:
            out.append(Figure(title, png))
    return out
