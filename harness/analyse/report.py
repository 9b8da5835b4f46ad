"""Markdown and self-contained HTML reports of one run folder.

Input: a run folder (docs/DESIGN.md: results.jsonl, run.json, env.json, suite.resolved.json),
read by ``harness.analyse.results.read_run_folder``.
Output: ``RUN_DIR/report.md`` (GitHub-flavoured) and ``RUN_DIR/report.html`` (one file: plots as
base64 PNG, the records as JSON in a ``<script type="application/json">``, no network access).

Tables: one per question the suite asks. Points are grouped by the params that vary across the
run: sequence length (``seq_len``) gives the columns, the strategy axes that vary give the rows,
every other varying param gives one table per value; with no strategy axis varying, the other
params give the rows (the header names them). A param ``X`` is a strategy axis when the records
also carry ``X.name``. A sub-param ``X.p`` (``lengths.sigma``, ``attention.window``) counts as
a param of its own unless ``X``'s value fixes it (a strategy's label carries its params), so
every point gets its own cell; points that no param tells apart (a swept field the runner does
not record as a param) get a row each, by label. A cell shows latency p50 with its 95% CI,
tokens/s, peak memory, MFU, and the speed-up and memory ratio against the baseline strategy
(``--baseline``; default the row whose attention is ``dense``, else the first row). Peak memory
is ``harness.analyse.results.memory_metric``: the GPU allocator peak, else the CPU RSS above the
pre-point baseline, else the raw RSS; the table caption names it. A failed
point shows its status (``OOM``, ``timeout``, ``not supported``, ``error``, ``crashed``) in its
cell and its reason under the table. Same input -> byte-identical output. Never imports torch.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.analyse.results import BadInput, RunFolder, memory_metric, read_run_folder

__all__ = ["build_tables", "render_markdown", "render_html", "write_reports"]

COLUMN_AXIS = "seq_len"
POINT_LABEL = "point"  # the row key of last resort: the record's label
STATUS_TEXT = {"oom": "OOM", "timeout": "timeout", "not_supported": "not supported",
               "error": "error", "crashed": "crashed", "interrupted": "interrupted"}
ENV_HIGHLIGHTS = ("hostname", "python", "torch", "cuda", "cudnn", "nccl", "driver", "gpu",
                  "gpu_name", "gpu_count", "cpu", "cpu_count", "deepspeed", "git_commit", "git")


@dataclass
class Cell:
    status: str
    lines: list[str] = field(default_factory=list)
    point_id: str = ""


@dataclass
class Table:
    title: str
    column_axis: str | None
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    baseline: str | None
    memory_metric: str
    failures: list[tuple[str, str, str]]  # (point label, status, reason)
    records: list[dict] = field(default_factory=list)
    row_axis: str = "strategy"  # what the rows are: the strategy axes, else the params named


def _value(rec: dict, key: str):
    if key == POINT_LABEL:
        return rec.get("label", rec.get("point_id"))
    return (rec.get("params") or {}).get(key)


def _json(rec: dict, key: str) -> str:
    return json.dumps(_value(rec, key), sort_keys=True, default=str)


def _param_keys(records: list[dict]) -> list[str]:
    """Every param name, in order of first appearance (the runner's: axis, then its params)."""
    return list(dict.fromkeys(k for r in records for k in (r.get("params") or {})))


def _strategy_keys(records: list[dict], keys: list[str]) -> list[str]:
    """Those of ``keys`` that are strategy axes (``X`` with ``X.name`` among the params) or
    their params (``X.window``)."""
    params = set(_param_keys(records))
    return [k for k in keys if f"{k.split('.')[0]}.name" in params]


def _fixed_by_head(records: list[dict], key: str) -> bool:
    """``X.p`` whose value is the same wherever ``X``'s is (a strategy's label carries its
    params): grouping by ``X`` already tells its points apart."""
    head = key.split(".")[0]
    if head == key:
        return False
    seen: dict[str, str] = {}
    return all(seen.setdefault(_json(r, head), _json(r, key)) == _json(r, key) for r in records)


def _varying(records: list[dict]) -> list[str]:
    keys = sorted(k for k in _param_keys(records) if len({_json(r, k) for r in records}) > 1)
    return [k for k in keys if not _fixed_by_head(records, k)]


def _apart(records: list[dict], keys: list[str]) -> bool:
    """Whether ``keys`` give every point its own combination of values."""
    return len({tuple(_json(r, k) for k in keys) for r in records}) == len(records)


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def _fmt_bytes(n) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _fmt_num(x) -> str:
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.3g}"


def _memory(rec: dict, metric: str):
    return (rec.get("metrics") or {}).get(metric)


def _cell(rec: dict | None, base: dict | None, mem_metric: str) -> Cell:
    if rec is None:
        return Cell("absent", ["—"])
    status = rec.get("status", "error")
    if status != "ok":
        return Cell(status, [STATUS_TEXT.get(status, status)], rec.get("point_id", ""))
    m = rec.get("metrics") or {}
    lines = []
    p50 = m.get("latency_ms_p50")
    if p50 is not None:
        lo, hi = m.get("latency_ms_p50_ci_low"), m.get("latency_ms_p50_ci_high")
        ci = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
        lines.append(f"{p50:.3g} ms{ci}")
    if m.get("tokens_per_s") is not None:
        lines.append(f"{_fmt_num(m['tokens_per_s'])} tok/s")
    if _memory(rec, mem_metric) is not None:
        lines.append(_fmt_bytes(_memory(rec, mem_metric)))
    if m.get("mfu") is not None:
        lines.append(f"MFU {m['mfu']:.1%}")
    lines += _axis_lines(m)
    if base is not None and base is not rec and base.get("status") == "ok":
        bm = base.get("metrics") or {}
        if bm.get("latency_ms_p50") and p50:
            lines.append(f"speed-up ×{bm['latency_ms_p50'] / p50:.2f}")
        if _memory(base, mem_metric) and _memory(rec, mem_metric) is not None:
            lines.append(f"mem ×{_memory(rec, mem_metric) / _memory(base, mem_metric):.2f}")
    return Cell("ok", lines or ["ok"], rec.get("point_id", ""))


def _axis_lines(m: dict) -> list[str]:
    """What the padding, parallel, precision and ops axes measure, where a point has it."""
    lines = []
    if m.get("padding_efficiency") is not None and m["padding_efficiency"] < 1:
        lines.append(f"{m['padding_efficiency']:.1%} real tokens")
        if m.get("real_tokens_per_s") is not None:
            lines.append(f"{_fmt_num(m['real_tokens_per_s'])} real tok/s")
    if m.get("model_state_bytes_max") is not None:
        lines.append(f"model states {_fmt_bytes(m['model_state_bytes_max'])}/rank")
    if m.get("loss_parity_rel_diff") is not None:
        flag = "" if m.get("loss_parity_ok", True) else " (beyond tolerance)"
        lines.append(f"loss vs fp32 {m['loss_parity_rel_diff']:.1e}{flag}")
    if m.get("amp_skipped_steps"):
        lines.append(f"{m['amp_skipped_steps']} skipped steps")
    if m.get("compile_s") is not None:
        lines.append(f"compile {m['compile_s']:.1f} s")
    if m.get("throttled"):
        lines.append("throttled")
    return lines


def _pick_baseline(row_labels: list[str], row_parts: dict[str, tuple], wanted: str | None):
    if not row_labels:
        return None
    for label in row_labels:
        if wanted is not None and (label == wanted or wanted in row_parts[label]):
            return label
    if wanted is not None:
        raise BadInput(f"baseline strategy {wanted!r} not found; rows are: {', '.join(row_labels)}")
    for label in row_labels:
        if "dense" in row_parts[label]:
            return label
    return row_labels[0]


def build_tables(records: list[dict], baseline: str | None = None) -> list[Table]:
    """Group records into one table per question (see the module docstring)."""
    varying = _varying(records)
    col = COLUMN_AXIS if COLUMN_AXIS in varying else None
    strategy_rows = _strategy_keys(records, [k for k in _param_keys(records) if k in varying])
    row_keys = strategy_rows or [k for k in varying if k != col]
    table_keys = [k for k in varying if k != col and k not in row_keys]
    if not _apart(records, varying):
        row_keys = row_keys + [POINT_LABEL]
    row_axis = "strategy" if row_keys == strategy_rows else " · ".join(row_keys)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        tkey = tuple(json.dumps(_value(r, k), sort_keys=True) for k in table_keys)
        groups.setdefault(tkey, []).append(r)
    tables, found_baseline = [], baseline is None
    for tkey in sorted(groups, key=lambda t: [_sort_key(json.loads(v)) for v in t]):
        recs = groups[tkey]
        title = (", ".join(f"{k} = {json.loads(v)}" for k, v in zip(table_keys, tkey))
                 or " × ".join(row_keys + ([col] if col else [])) or "all points")
        try:
            tables.append(_table(title, recs, row_keys, col, baseline, row_axis))
            found_baseline = True
        except BadInput:
            tables.append(_table(title, recs, row_keys, col, None, row_axis))
    if not found_baseline:
        _table("", records, row_keys, col, baseline, row_axis)  # raises the clear error
    return tables


def _table(title, recs, row_keys, col, baseline, row_axis) -> Table:
    mem_metric = memory_metric(recs)
    row_parts: dict[str, tuple] = {}
    for r in recs:
        parts = tuple(str(_value(r, k)) for k in row_keys)
        row_parts.setdefault(" · ".join(parts) or str(r.get("suite", "run")), parts)
    order = {}
    for r in recs:  # keep suite order: first appearance by record index
        label = next(lbl for lbl, p in row_parts.items()
                     if p == tuple(str(_value(r, k)) for k in row_keys))
        order.setdefault(label, r.get("index", 0))
    row_labels = sorted(row_parts, key=lambda lbl: (order[lbl], lbl))
    columns = sorted({_value(r, col) for r in recs}, key=_sort_key) if col else [None]
    cells: dict[tuple, dict] = {}
    for r in recs:
        label = " · ".join(str(_value(r, k)) for k in row_keys) or str(r.get("suite", "run"))
        cells[(label, _value(r, col) if col else None)] = r
    base_label = _pick_baseline(row_labels, row_parts, baseline)
    rows = [(lbl, [_cell(cells.get((lbl, c)), cells.get((base_label, c)), mem_metric)
                   for c in columns]) for lbl in row_labels]
    failures = [(r.get("label", r.get("point_id", "")), STATUS_TEXT.get(r["status"], r["status"]),
                 (r.get("error") or "").strip().splitlines()[-1:][0] if r.get("error") else "")
                for r in sorted(recs, key=lambda r: r.get("index", 0)) if r.get("status") != "ok"]
    return Table(title, col, [str(c) for c in columns] if col else ["result"], rows, base_label,
                 mem_metric, failures, recs, row_axis or "strategy")


def status_counts(records: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r.get("status", "?")] = out.get(r.get("status", "?"), 0) + 1
    return dict(sorted(out.items()))


def env_highlights(env: dict) -> list[tuple[str, str]]:
    flat: dict[str, object] = {}
    for k, v in env.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items() if not isinstance(vv, (dict, list))})
        elif not isinstance(v, list):
            flat[k] = v
    picked = [k for k in sorted(flat) if k.split(".")[0] in ENV_HIGHLIGHTS
              or k.split(".")[-1] in ENV_HIGHLIGHTS]
    return [(k, str(flat[k])) for k in (picked or sorted(flat)[:10]) if flat[k] is not None]


def summary(run: RunFolder) -> dict:
    return {"suite": str(run.run.get("suite") or run.suite.get("name") or
                         (run.records[0].get("suite") if run.records else "?")),
            "device": str(run.run.get("device", "?")),
            "fingerprint": str(run.run.get("fingerprint", "")),
            "started": str(run.run.get("started_at", run.run.get("started", ""))),
            "finished": str(run.run.get("finished_at", run.run.get("finished", ""))),
            "points": len(run.records), "counts": status_counts(run.records),
            "env": env_highlights(run.env)}


def _md(text) -> str:
    """Escape data for a GFM table cell: HTML-significant characters, pipes, newlines."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(run: RunFolder, baseline: str | None = None) -> str:
    s, tables = summary(run), build_tables(run.records, baseline)
    out = [f"# tbench report: {_md(s['suite'])}", "",
           f"- device: {_md(s['device'])}", f"- points: {s['points']} ("
           + ", ".join(f"{_md(k)}: {v}" for k, v in s["counts"].items()) + ")"]
    if s["started"]:
        out.append(f"- started: {_md(s['started'])}, finished: {_md(s['finished'])}")
    if s["fingerprint"]:
        out.append(f"- environment fingerprint: `{_md(s['fingerprint'])}`")
    out += [f"- {_md(k)}: {_md(v)}" for k, v in s["env"]]
    for t in tables:
        out += ["", f"## {_md(t.title)}", ""]
        if t.baseline:
            out.append(f"Baseline: **{_md(t.baseline)}**. Cell: latency p50 [95% CI], tokens/s, "
                       f"peak memory ({t.memory_metric}); where measured, MFU, padding "
                       "efficiency and real tokens/s, model-state bytes per rank, loss vs fp32, "
                       "compile time; speed-up and memory ratio vs baseline.")
            out.append("")
        head = _md(t.column_axis or "")
        out.append(f"| {_md(t.row_axis)} | "
                   + " | ".join(f"{head} {_md(c)}".strip() for c in t.columns) + " |")
        out.append("|---|" + "---:|" * len(t.columns))
        for label, cells in t.rows:
            out.append(f"| {_md(label)} | "
                       + " | ".join("<br>".join(_md(x) for x in c.lines) for c in cells) + " |")
        if t.failures:
            out += ["", "Failures:", ""]
            out += [f"- {_md(lbl)}: {_md(st)}" + (f" — {_md(why)}" if why else "")
                    for lbl, st, why in t.failures]
    return "\n".join(out) + "\n"


def embedded_json(obj) -> str:
    """JSON safe inside <script>: no ``</`` or ``<!--`` can close or comment the element."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(run: RunFolder, baseline: str | None = None) -> str:
    import jinja2

    from harness.analyse import plots

    tables = build_tables(run.records, baseline)
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.analyse", "templates"),
                             autoescape=True, keep_trailing_newline=True)
    data = {"run": run.run, "records": run.records, "summary": summary(run)}
    return env.get_template("report.html.j2").render(
        s=summary(run), tables=tables, figures=plots.figures(run.records, tables),
        data_json=embedded_json(data))


def write_reports(run_dir, formats=("md", "html"), baseline: str | None = None) -> list[Path]:
    """Write report.md and/or report.html into ``run_dir``; returns the paths written."""
    run = read_run_folder(run_dir)
    bad = [f for f in formats if f not in ("md", "html")]
    if bad:
        raise BadInput(f"unknown report format(s) {', '.join(bad)}; allowed: md, html")
    written = []
    for fmt in formats:
        text = render_markdown(run, baseline) if fmt == "md" else render_html(run, baseline)
        path = Path(run.path) / f"report.{fmt}"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
