"""report.md: GitHub-flavoured Markdown of one run folder.

It opens with the title and a summary, then "Answers": per group, the strategies ranked by
their time against the baseline (``harness.analyse.answers``), each with its ratio interval,
verdict, own time and peak memory, and one line of how the group was measured; then the
attention kernels, the environment, the detail tables (``tables``) and where the time goes
(``profiles``). Same input -> byte-identical output. Never imports torch.
"""
from __future__ import annotations

import html

from harness.analyse.answers import GroupAnswer, answers
from harness.analyse.kernel_answers import kernel_answers
from harness.analyse.report.profiles import profile_intro, profiled, regions_text, step_text, with_profiles
from harness.analyse.report.summary import summary
from harness.analyse.report.tables import build_tables
from harness.analyse.units import fmt_bytes, fmt_ms
from harness.records import RunFolder, memory_metric

def _md(text) -> str:
    """Escape data for a GFM table cell: HTML-significant characters, pipes, newlines."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")



def answers_intro(records: list[dict]) -> str:
    return ("Per group of points that differ only in their strategies: each strategy's step "
            "time against the group's baseline, as a ratio of pairs measured close together "
            "(interleaved in random order, or at the same time on disjoint cores: a duet; a run "
            "without pairs is compared on the round medians of each point, Welch's t), "
            "with its confidence interval on the log scale and the verdict against the "
            "resolution -- faster or slower by more than it, equal within it, or undecided (then "
            "the smallest difference the interval could have decided). The interval is the one "
            "the run stopped at: 95% for a fixed number of pairs; after the sequential look j, "
            "1 - 0.05 / (j (j + 1)), which keeps 95% over all looks. Time: the point's own "
            f"geometric mean of round medians [95% CI]; memory: {memory_metric(records)}.")


def ranked_table(a: GroupAnswer) -> list[str]:
    """One group's answer as a GFM table, best first."""
    out = [f"### {_md(a.group)}", "", f"Baseline: **{_md(a.baseline or '(did not run)')}**."
           + "".join(f" {_md(n)}." for n in a.notes), "",
           "| # | strategy | verdict | time / baseline's | time | peak memory |",
           "|---:|---|---|---:|---:|---:|"]
    for i, r in enumerate(a.rows, start=1):
        mem = fmt_bytes(r.memory) if r.memory is not None else "—"
        own = fmt_ms(r.p50, *(r.ci or (None, None))) if r.p50 is not None else "—"
        if r.status != "ok":
            out.append(f"| – | {_md(r.label)} | {_md(r.status)}: {_md(r.error)} | | | |")
        elif r.ratio is None:
            out.append(f"| {i} | **{_md(r.label)}** | baseline | ×1 | {own} | {mem} |")
        else:
            out.append(f"| {i} | {_md(r.label)} | {_md(r.ratio.verdict_text())} | "
                       f"{_md(r.ratio.interval_text())} | {own} | {mem} |")
    return out + [""]


KERNELS_INTRO = ("Per pattern and setting, the fastest kernel among the points that ran, its "
                 "speed-up over dense attention on SDPA's own backend choice in the same setting, "
                 "and the ideal speed-up from the attention products (q·k scored plus p·v "
                 "attended, dense's over the pattern's), an ideal for attention alone: a whole "
                 "step also runs projections and the FFN. The contract tests hold every kernel "
                 "that runs on CPU to a float64 reference; a CUDA-only kernel (flash_attn) is "
                 "held to one only where the GPU check ran it.")


def profile_markdown(records: list[dict]) -> list[str]:
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


def render_markdown(run: RunFolder, baseline: str | None = None) -> str:
    s, tables = summary(run), build_tables(run.records, baseline)
    found = answers(run.records, baseline)
    out = [f"# tbench report: {_md(s['suite'])}", "",
           f"- device: {_md(s['device'])}", f"- points: {s['points']} ("
           + ", ".join(f"{_md(k)}: {v}" for k, v in s["counts"].items()) + ")"]
    if s["flags"]:
        out.append("- flagged: " + ", ".join(f"{v} {_md(k)}" for k, v in s["flags"].items()))
    if s["started"]:
        out.append(f"- started: {_md(s['started'])}, finished: {_md(s['finished'])}")
    if s["fingerprint"]:
        out.append(f"- environment fingerprint: `{_md(s['fingerprint'])}`")
    out += ["", "## Answers", "", _md(answers_intro(run.records)), ""]
    out += [line for a in found for line in ranked_table(a)] or ["No group holds two ok points to compare."]
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
                       "compile time; memory ratio vs baseline (the time ratios: Answers).")
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
    out += profile_markdown(with_profiles(run))
    return "\n".join(out) + "\n"


