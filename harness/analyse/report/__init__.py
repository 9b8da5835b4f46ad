"""Markdown and self-contained HTML reports of one run folder.

    write_reports(run_dir_or_folder, formats=("md", "html"), baseline=None) -> [paths]

Input: a run folder (docs/DESIGN.md: results.jsonl, run.json, env.json, suite.resolved.json),
read by ``harness.records.read_run_folder`` -- or the ``RunFolder`` the run stage holds.
Output: ``RUN_DIR/report.md`` (GitHub-flavoured, ``markdown``) and ``RUN_DIR/report.html`` (one
file: plots as base64 PNG, the records as JSON, no network access; ``html``).

Both lead with the decision: per group of points that differ only in strategies, the
strategies ranked by their time against the baseline with interval and verdict
(``harness.analyse.answers``; the HTML adds one forest plot per group, ``forest``), one line per
group of how it was measured and what was re-measured. Then the attention kernels, the
environment, the detail tables (``tables``: a cell per point, ``cells``), where the time goes
(``profiles``) and the figures (``plots``, ``plots_serving``). Labels, baselines and groups come
from ``harness.analyse.layout``, so answers and tables name a strategy the same way. Times read
in ms, or s from 1000 ms on; bytes in KiB/MiB/GiB (``harness.analyse.units``). Same input ->
byte-identical output. Never imports torch.
"""
from __future__ import annotations

from pathlib import Path

from harness.analyse.report.html import render_html
from harness.analyse.report.markdown import render_markdown
from harness.analyse.report.tables import build_tables
from harness.records import BadInput, RunFolder, read_run_folder

__all__ = ["build_tables", "render_markdown", "render_html", "write_reports"]


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
