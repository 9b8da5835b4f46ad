"""report.html: one self-contained file (plots as base64 PNG, the records as JSON in a
``<script type="application/json">``, no network access): the same sections as report.md, each
group's answer with its forest plot (``forest``), then the figures (``plots``)."""
from __future__ import annotations

import json

from harness.analyse.answers import answers
from harness.analyse.kernel_answers import kernel_answers
from harness.analyse.report import forest, plots, plots_serving
from harness.analyse.report.markdown import KERNELS_INTRO, answers_intro
from harness.analyse.report.profiles import profile_intro, profiled, regions_text, step_text, with_profiles
from harness.analyse.report.summary import summary
from harness.analyse.report.tables import build_tables
from harness.analyse.units import fmt_bytes, fmt_ms
from harness.records import RunFolder


def embedded_json(obj) -> str:
    """JSON safe inside <script>: no ``</`` or ``<!--`` can close or comment the element."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(run: RunFolder, baseline: str | None = None) -> str:
    import jinja2

    tables = build_tables(run.records, baseline)
    found = answers(run.records, baseline)
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.analyse.report", "templates"),
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
        answers=found, forests=forest.figures(found), fmt_bytes=fmt_bytes,
        answers_intro=answers_intro(run.records), data_json=embedded_json(data),
        kernels=kernel_answers(run.records), kernels_intro=KERNELS_INTRO)


