"""Markdown and self-contained HTML reports of one run folder.

Input: a run folder (docs/DESIGN.md: results.jsonl, run.json, env.json, suite.resolved.json),
read by ``harness.records.read_run_folder``.
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
is ``harness.records.memory_metric``: the GPU allocator peak, else the CPU RSS above the
pre-point baseline, else the raw RSS; the table caption names it. A failed
point shows its status (``OOM``, ``timeout``, ``not supported``, ``error``, ``crashed``) in its
cell and its reason under the table. A flagged point (``contended``, ``noisy``, ``drift``,
``single_round``: ``answers.point_flags``) gets a badge in its cell, and the summary counts them.
Times read in ms, or s from 1000 ms on; bytes in KiB/MiB/GiB (``answers.fmt_ms``, ``fmt_bytes``).

The report opens with the title, a short summary, then "Answers" (``answers.answers``: per
workload and shape, the fastest and the leanest strategy against the baseline, or a tie), then
the environment, the tables and the plots. Labels, the baseline and the grouping into tables
come from ``harness.analyse.answers`` (``layout``, ``baselines``), so answers and tables name
a strategy the same way. Same input -> byte-identical output. Never imports torch.

"Where the time goes" (points with a profiled pass, ``measure.profile``; or a profile that
``tbench profile`` saved as ``RUN_DIR/profiles/<id>/breakdown.json``): per point, the timed
median beside the profiled step time, the regions in ms of the timed median
(``answers.region_ms``) and a link to its trace (relative to the run folder: the HTML stays
self-contained, traces are linked, not embedded); then its top operators by self time (and GPU
kernels). The HTML adds one stacked bar per point and table (``plots.breakdown_figures``).
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.analyse.answers import MEMORY_TIE, answer_lines, answers
from harness.analyse.kernel_answers import kernel_answers
from harness.analyse.layout import (
    Layout,
    baselines,
    layout,
    point_flags,
    row_labels,
    sort_key,
    table_groups,
    value,
)
from harness.analyse.memory_tolerance import MEM_MODEL_TOLERANCE
from harness.analyse.regions import region_ms, region_shares
from harness.analyse.units import fmt_bytes, fmt_ms, fmt_num
from harness.records import BadInput, RunFolder, memory_metric, read_run_folder

__all__ = ["build_tables", "render_markdown", "render_html", "write_reports"]

STATUS_TEXT = {"oom": "OOM", "timeout": "timeout", "not_supported": "not supported",
               "error": "error", "crashed": "crashed", "interrupted": "interrupted",
               "contended": "contended"}
ENV_HIGHLIGHTS = ("hostname", "python", "torch", "cuda", "cudnn", "nccl", "driver", "gpu",
                  "gpu_name", "gpu_count", "cpu", "cpu_count", "deepspeed", "git_commit", "git")


@dataclass
class Cell:
    status: str
    lines: list[str] = field(default_factory=list)
    point_id: str = ""
    flags: tuple[str, ...] = ()  # badges: contended, noisy, drift, single_round


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


def _memory(rec: dict, metric: str):
    return (rec.get("metrics") or {}).get(metric)


def _cell(rec: dict | None, base: dict | None, mem_metric: str) -> Cell:
    if rec is None:
        return Cell("absent", ["—"])
    status, flags = rec.get("status", "error"), point_flags(rec)
    if status != "ok":
        return Cell(status, [STATUS_TEXT.get(status, status)], rec.get("point_id", ""), flags)
    m = rec.get("metrics") or {}
    lines = []
    p50 = m.get("latency_ms_p50")
    if p50 is not None:
        lines.append(fmt_ms(p50, m.get("latency_ms_p50_ci_low"), m.get("latency_ms_p50_ci_high")))
    if m.get("tokens_per_s") is not None:
        lines.append(f"{fmt_num(m['tokens_per_s'])} tok/s")
    if _memory(rec, mem_metric) is not None:
        lines.append(fmt_bytes(_memory(rec, mem_metric)))
        lines += _predicted_lines(m, _memory(rec, mem_metric), mem_metric)
    if m.get("mfu") is not None:
        lines.append(f"MFU {m['mfu']:.1%}")
    lines += _axis_lines(m)
    if base is not None and base is not rec and base.get("status") == "ok":
        bm = base.get("metrics") or {}
        if bm.get("latency_ms_p50") and p50:
            lines.append(f"speed-up ×{bm['latency_ms_p50'] / p50:.2f}")
        if _memory(base, mem_metric) and _memory(rec, mem_metric) is not None:
            lines.append(f"mem ×{_memory(rec, mem_metric) / _memory(base, mem_metric):.2f}")
    return Cell("ok", lines or ["ok"], rec.get("point_id", ""), flags)


PREDICTED_FOR = ("mem_peak_allocated_bytes", "mem_peak_rss_above_baseline_bytes")


def _predicted_lines(m: dict, measured, mem_metric: str) -> list[str]:
    """The memory model's prediction beside the measured peak, and ``⚠ model +N%`` when they
    disagree by more than ``MEM_MODEL_TOLERANCE`` (a finding about the model or the strategy)."""
    predicted = m.get("mem_predicted_bytes")
    if not predicted or mem_metric not in PREDICTED_FOR:
        return []
    off = measured / predicted - 1
    lines = [f"pred {fmt_bytes(predicted)}"]
    if abs(off) > MEM_MODEL_TOLERANCE:
        lines.append(f"⚠ mem model {off:+.0%}")
    return lines


def _axis_lines(m: dict) -> list[str]:
    """What the padding, parallel, precision and ops axes measure, where a point has it."""
    lines = []
    if m.get("padding_efficiency") is not None and m["padding_efficiency"] < 1:
        lines.append(f"{m['padding_efficiency']:.1%} real tokens")
        if m.get("real_tokens_per_s") is not None:
            lines.append(f"{fmt_num(m['real_tokens_per_s'])} real tok/s")
    if m.get("model_state_bytes_max") is not None:
        lines.append(f"model states {fmt_bytes(m['model_state_bytes_max'])}/rank")
    if m.get("loss_parity_rel_diff") is not None:
        flag = "" if m.get("loss_parity_ok", True) else " (beyond tolerance)"
        lines.append(f"loss vs fp32 {m['loss_parity_rel_diff']:.1e}{flag}")
    if m.get("amp_skipped_steps"):
        lines.append(f"{m['amp_skipped_steps']} skipped steps")
    if m.get("compile_s") is not None:
        lines.append(f"compile {m['compile_s']:.1f} s")
    if m.get("flex_block_mask_ms") is not None:
        lines.append(f"{m['flex_block_masks']} block masks, {m['flex_block_mask_ms']:.1f} ms each")
    lines += _serving_lines(m)
    if m.get("throttled"):
        lines.append("throttled")
    return lines


def _serving_lines(m: dict) -> list[str]:
    """What the inference workloads and the compression axis measure, where a point has it."""
    lines = []
    if m.get("ttft_ms_p50") is not None:
        lines.append(f"TTFT {fmt_ms(m['ttft_ms_p50'])}")
    if m.get("itl_ms_p50") is not None:
        lines.append(f"ITL p50 {fmt_ms(m['itl_ms_p50'])}, p99 {fmt_ms(m['itl_ms_p99'])}")
    if m.get("kv_cache_bytes") is not None:
        same = "" if m.get("kv_cache_analytic_bytes") == m["kv_cache_bytes"] else \
            f" (analytic {fmt_bytes(m.get('kv_cache_analytic_bytes') or 0)})"
        lines.append(f"KV cache {fmt_bytes(m['kv_cache_bytes'])}{same}")
    if m.get("mem_bw_gbs") is not None:
        util = m.get("mem_bw_util")
        lines.append(f"mem BW {m['mem_bw_gbs']:.3g} GB/s" + (f" ({util:.1%} of peak)" if util is not None
                                                            else " (peak n/a)"))
    if m.get("compression_logits_rel_diff") is not None:
        lines.append(f"logits Δ {m['compression_logits_rel_diff']:.1e}, loss Δ "
                     f"{m.get('compression_loss_rel_diff') or 0:.1e}")
    if m.get("weight_uncompressed_bytes") is not None:
        lines.append(f"weights {fmt_bytes(m['weight_bytes'])} of {fmt_bytes(m['weight_uncompressed_bytes'])}")
    return lines


def build_tables(records: list[dict], baseline: str | None = None) -> list[Table]:
    """Group records into one table per question (see the module docstring)."""
    lay = layout(records)
    groups = table_groups(records, lay)
    tables = []
    for (tkey, recs), base_label in zip(groups, baselines(groups, lay, baseline)):
        title = (", ".join(f"{k} = {v}" for k, v in zip(lay.tables, tkey))
                 or " × ".join(lay.rows + ((lay.column,) if lay.column else ())) or "all points")
        tables.append(_table(title, recs, lay, base_label))
    return tables


def _table(title: str, recs: list[dict], lay: Layout, base_label: str | None) -> Table:
    mem_metric = memory_metric(recs)
    col = lay.column
    columns = sorted({value(r, col) for r in recs}, key=sort_key) if col else [None]
    cells = {(lay.row_label(r), value(r, col) if col else None): r for r in recs}
    rows = [(lbl, [_cell(cells.get((lbl, c)), cells.get((base_label, c)), mem_metric)
                   for c in columns]) for lbl in row_labels(recs, lay)]
    failures = [(r.get("label", r.get("point_id", "")), STATUS_TEXT.get(r["status"], r["status"]),
                 next(iter((r.get("error") or "").strip().splitlines()[-1:]), ""))
                for r in sorted(recs, key=lambda r: r.get("index", 0)) if r.get("status") != "ok"]
    return Table(title, col, [str(c) for c in columns] if col else ["result"], rows, base_label,
                 mem_metric, failures, recs, lay.row_axis or "strategy")


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
            "flags": flag_counts(run.records), "env": env_highlights(run.env)}


def flag_counts(records: list[dict]) -> dict[str, int]:
    """Points per badge, in ``answers.FLAGS`` order: ``{"contended": 3, "noisy": 5}``."""
    out: dict[str, int] = {}
    for r in records:
        for f in point_flags(r):
            out[f] = out.get(f, 0) + 1
    return out


def answers_intro(records: list[dict]) -> str:
    return ("Per workload and shape: the fastest strategy (lowest latency p50) and the leanest "
            f"(lowest peak memory, {memory_metric(records)}), against the baseline; a tie when "
            f"the 95% CIs overlap (memory: within {MEMORY_TIE:.0%}). ⚠ marks a flagged point "
            "(contended, noisy, drift, single_round).")


PROFILE_FILE = "breakdown.json"  # in RUN_DIR/profiles/<point id>/, written by `tbench profile`


@dataclass
class Profiled:
    """One profiled point, as the report shows it."""

    label: str
    p50: float | None  # timed median (ms)
    step_ms: float | None  # profiled step (ms)
    regions: list[tuple[str, float, float]]  # (region, ms of the timed median, share)
    top_ops: list[dict]  # {name, self_ms, share, calls} per step
    kernels: list[dict]  # {name, ms, share, calls} per step (GPU)
    trace: str | None  # relative to the run folder
    snapshot: str | None  # CUDA memory snapshot, relative to the run folder


def saved_profiles(run_dir) -> dict[str, dict]:
    """Point id -> the ``profile_*`` metrics ``tbench profile`` saved for it."""
    out = {}
    for path in sorted(Path(run_dir).glob(f"profiles/*/{PROFILE_FILE}")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("point_id"), str):
            out[data["point_id"]] = {k: v for k, v in data.items() if k.startswith("profile_")}
    return out


def with_profiles(run: RunFolder) -> list[dict]:
    """The run's records, a saved profile added to an ok record that has none of its own."""
    saved, out = saved_profiles(run.path), []
    for rec in run.records:
        extra = saved.get(rec.get("point_id")) if rec.get("status") == "ok" else None
        if extra and not region_ms(rec):
            rec = dict(rec, metrics={**(rec.get("metrics") or {}), **extra})
        out.append(rec)
    return out


def profiled(records: list[dict]) -> list[Profiled]:
    out = []
    for rec in sorted(records, key=lambda r: r.get("index", 0)):
        ms, shares, m = region_ms(rec), region_shares(rec), rec.get("metrics") or {}
        if not ms:
            continue
        regions = sorted(((r, t, shares[r]) for r, t in ms.items() if t > 0), key=lambda x: -x[1])
        out.append(Profiled(str(rec.get("label", rec.get("point_id"))), m.get("latency_ms_p50"),
                            m.get("profile_step_ms"), regions, list(m.get("profile_top_ops") or []),
                            list(m.get("profile_kernels") or []), link(m.get("profile_trace")),
                            link(m.get("profile_memory_snapshot"))))
    return out


def link(path) -> str | None:
    """A file of the run folder as a relative link; None for anything else (no scheme, no
    absolute path: a record cannot make the report link elsewhere)."""
    text = str(path) if path else ""
    if not re.fullmatch(r"[\w.+-]+(/[\w.+-]+)*", text) or ".." in text.split("/"):
        return None
    return text


def profile_intro(points: list[Profiled], records: list[dict]) -> str:
    basis = sorted({str((r.get("metrics") or {}).get("profile_time_basis")) for r in records
                    if region_ms(r)})
    return (f"{len(points)} profiled point(s): a few steps under torch.profiler after the timed "
            f"samples (time basis: {', '.join(basis)}; cpu = CPU time of the step, device = GPU "
            "kernel time). Regions are shares of the profiled step times the timed median, in "
            "ms; the profiled step beside the timed median shows the profiler's overhead. Open a "
            "trace in https://ui.perfetto.dev or chrome://tracing.")


def regions_text(p: Profiled, limit: int = 5) -> str:
    shown = [f"{r} {fmt_ms(t)} ({share:.0%})" for r, t, share in p.regions[:limit]]
    rest = sum(t for _, t, _ in p.regions[limit:])
    return ", ".join(shown + ([f"rest {fmt_ms(rest)}"] if rest > 0 else []))


def step_text(p: Profiled) -> str:
    if p.step_ms is None:
        return "—"
    return fmt_ms(p.step_ms) + (f" (×{p.step_ms / p.p50:.2f})" if p.p50 else "")


def _profile_markdown(records: list[dict]) -> list[str]:
    points = profiled(records)
    if not points:
        return []
    out = ["", "## Where the time goes", "", _md(profile_intro(points, records)), "",
           "| point | timed p50 | profiled step | regions | trace |", "|---|---:|---:|---|---|"]
    for p in points:
        files = f"[trace]({p.trace})" if p.trace else "—"
        files += f", [memory]({p.snapshot})" if p.snapshot else ""
        out.append(f"| {_md(p.label)} | {fmt_ms(p.p50) if p.p50 is not None else '—'} | "
                   f"{step_text(p)} | {_md(regions_text(p))} | {files} |")
    for p in points:
        out += ["", f"### Top operators: {_md(p.label)}", "",
                "| operator | self ms/step | share | calls/step |", "|---|---:|---:|---:|"]
        out += [f"| {_md(o['name'])} | {o['self_ms']:.3g} | {o['share']:.1%} | {o['calls']:g} |"
                for o in p.top_ops]
        if p.kernels:
            out += ["", "| GPU kernel | ms/step | share | calls/step |", "|---|---:|---:|---:|"]
            out += [f"| {_md(k['name'])} | {k['ms']:.3g} | {k['share']:.1%} | {k['calls']:g} |"
                    for k in p.kernels]
    return out


def _md(text) -> str:
    """Escape data for a GFM table cell: HTML-significant characters, pipes, newlines."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


KERNELS_INTRO = ("Per pattern and setting, the fastest kernel among the points that ran, its "
                 "speed-up over dense attention on SDPA's own backend choice in the same setting, "
                 "and the ideal speed-up from the attention products (q·k scored plus p·v "
                 "attended, dense's over the pattern's), an ideal for attention alone: a whole "
                 "step also runs projections and the FFN. The contract tests hold every kernel "
                 "that runs on CPU to a float64 reference; a CUDA-only kernel (flash_attn) is "
                 "held to one only where the GPU check ran it.")


def render_markdown(run: RunFolder, baseline: str | None = None) -> str:
    s, tables = summary(run), build_tables(run.records, baseline)
    found = answer_lines(answers(run.records, baseline), limit=None)
    out = [f"# tbench report: {_md(s['suite'])}", "",
           f"- device: {_md(s['device'])}", f"- points: {s['points']} ("
           + ", ".join(f"{_md(k)}: {v}" for k, v in s["counts"].items()) + ")"]
    if s["flags"]:
        out.append("- flagged: " + ", ".join(f"{v} {_md(k)}" for k, v in s["flags"].items()))
    if s["started"]:
        out.append(f"- started: {_md(s['started'])}, finished: {_md(s['finished'])}")
    if s["fingerprint"]:
        out.append(f"- environment fingerprint: `{_md(s['fingerprint'])}`")
    out += ["", "## Answers", "", answers_intro(run.records), ""]
    out += [f"- {_md(line)}" for line in found] or ["No group holds two ok points to compare."]
    kernels = kernel_answers(run.records)
    if kernels:
        out += ["", "## Attention kernels", "", _md(KERNELS_INTRO), ""]
        out += [f"- {_md(line)}" for line in kernels]
    out += ["", "## Environment", ""] + [f"- {_md(k)}: {_md(v)}" for k, v in s["env"]]
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
                       + " | ".join("<br>".join([_md(x) for x in c.lines]
                                                + [f"⚠ {_md(f)}" for f in c.flags])
                                    for c in cells) + " |")
        if t.failures:
            out += ["", "Failures:", ""]
            out += [f"- {_md(lbl)}: {_md(st)}" + (f" — {_md(why)}" if why else "")
                    for lbl, st, why in t.failures]
    out += _profile_markdown(with_profiles(run))
    return "\n".join(out) + "\n"


def embedded_json(obj) -> str:
    """JSON safe inside <script>: no ``</`` or ``<!--`` can close or comment the element."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(run: RunFolder, baseline: str | None = None) -> str:
    import jinja2

    from harness.analyse import plots, plots_serving

    tables = build_tables(run.records, baseline)
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.analyse", "templates"),
                             autoescape=True, keep_trailing_newline=True)
    data = {"run": run.run, "records": run.records, "summary": summary(run)}
    records = with_profiles(run)
    points = profiled(records)
    return env.get_template("report.html.j2").render(
        s=summary(run), tables=tables,
        figures=plots.figures(run.records, tables) + plots_serving.figures(run.records),
        profiled=points, profile_intro=profile_intro(points, records) if points else "",
        profile_figures=plots.breakdown_figures(records, tables),
        regions_text=regions_text, step_text=step_text, fmt_ms=fmt_ms,
        answers=answer_lines(answers(run.records, baseline), limit=None),
        answers_intro=answers_intro(run.records), data_json=embedded_json(data),
        kernels=kernel_answers(run.records), kernels_intro=KERNELS_INTRO)


def write_reports(run_dir, formats=("md", "html"), baseline: str | None = None) -> list[Path]:
    """Write report.md and/or report.html into ``run_dir`` (a folder, or a ``RunFolder`` already
    in memory: the run stage's, which need not read its results back); the paths written."""
    run = run_dir if isinstance(run_dir, RunFolder) else read_run_folder(run_dir)
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
