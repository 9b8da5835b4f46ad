"""The report of a ``tbench tune`` folder: ``tune.md``, ``tune.html`` (self-contained, the
Pareto front drawn as a base64 PNG) and ``pareto.png``.

Input: ``RUN_DIR/tune.json`` (``harness.run.tune``). The first section is the decision: the
winner, its verdict against the runner-up, what each axis contributed (the winner with that
axis set back to the baseline's value, as a time ratio with its interval and a memory ratio),
and where the time goes (profile shares of the winner and the baseline); then the finalists,
the Pareto front of time vs peak memory over every measured configuration, the rungs, and
every configuration skipped, with its reason. Never imports torch.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

from harness import records
from harness.analyse.units import fmt_bytes

TUNE_FILE = "tune.json"


def read_tune(run_dir) -> dict:
    path = Path(run_dir) / TUNE_FILE
    if not path.is_file():
        raise records.BadInput(f"{path} not found: not a tune folder (tbench tune)")
    return records.read_json(path)


def _x(r: dict) -> str:
    if r.get("estimate") is None:
        return "—"
    ci = f" [{r['low']:.3f}, {r['high']:.3f}]" if r.get("low") is not None else ""
    return f"x{r['estimate']:.3f}{ci}"


def summary_lines(answer: dict) -> list[str]:
    """The decision in a few lines (the CLI's last lines and the report's first section)."""
    out = []
    win = answer.get("winner")
    if win:
        out.append(f"winner: {win['label']}  ({win['time_ms']:.2f} ms/step, peak "
                   f"{fmt_bytes(win.get('peak_bytes'))})")
        out.append(answer["decision"]["text"])
    total = answer.get("total")
    if total and total.get("estimate"):
        out.append(f"baseline {total['label']}: {_x(total)} the winner's time ({total['verdict']})")
    for c in answer.get("contributions") or []:
        mem = f", memory x{c['memory_ratio']:.2f}" if c.get("memory_ratio") else ""
        out.append(f"  {c['axis']} back to {c['back_to']}: time {_x(c)} ({c['verdict']}){mem}")
    top = (answer.get("contributions") or [{}])[0]
    if (top.get("estimate") or 0) > 1:
        out.append(f"the axis that contributes most: {top['axis']} (x{top['estimate']:.2f} slower back "
                   f"at {top['back_to']})")
    elif answer.get("contributions"):
        out.append("no axis of the winner reads faster than the baseline's value of that axis")
    if answer.get("pareto"):
        out.append(f"Pareto front (time vs peak memory): {len(answer['pareto'])} of "
                   f"{len(answer.get('measured') or [])} measured configurations")
    out += answer.get("notes") or []
    return out


def render_markdown(tune: dict) -> str:
    answer = tune.get("answer") or {}
    lines = [f"# Tune: {tune.get('suite') or ''}", "", *[f"- {l}" for l in summary_lines(answer)], "",
             f"Spent {tune.get('spent_before_s', 0):.0f} s of a {tune.get('budget_s', 0):.0f} s budget"
             + (" (the budget ran out: the answer is made from what was measured)"
                if answer.get("budget_spent") else "") + ".", ""]
    profile = answer.get("profile") or {}
    if profile:
        regions = sorted({r for shares in profile.values() for r in shares})
        lines += ["## Where the time goes (profile shares)", "",
                  "| configuration | " + " | ".join(regions) + " |", "|---|" + "---:|" * len(regions)]
        for label, shares in profile.items():
            lines.append(f"| {label} | " + " | ".join(f"{shares.get(r, 0):.0%}" for r in regions) + " |")
        lines.append("")
    lines += ["## Finalists (paired, against the leader)", "", "| configuration | ms/step | peak | ratio | verdict | check |",
              "|---|---:|---:|---|---|---|"]
    for f in answer.get("finalists") or []:
        lines.append(f"| {f['label']} | {f['time_ms']:.2f} | {fmt_bytes(f.get('peak_bytes'))} | {_x(f)} | "
                     f"{f['verdict']} | {'ok' if f.get('check') else f.get('check')} |")
    front = set(answer.get("pareto") or [])
    lines += ["", "## Measured configurations (latest rung; * on the Pareto front)", "",
              "| configuration | rung | ms/step | peak |", "|---|---:|---:|---:|"]
    for m in sorted(answer.get("measured") or [], key=lambda m: (-m["rung"], m["time_ms"] or 0)):
        star = " *" if m["label"] in front else ""
        lines.append(f"| {m['label']}{star} | {m['rung']} | {m['time_ms']:.2f} | {fmt_bytes(m.get('peak_bytes'))} |")
    lines += ["", "## Rungs", "", "| rung | configurations | measured | eligible | window |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['rung']} | {r['configurations']} | {r['measured']} | {r['eligible']} | {r['window_s']:g} s |"
              for r in tune.get("rungs") or []]
    lines += ["", f"## Skipped ({len(tune.get('skipped') or [])})", "", "| configuration | kind | reason |", "|---|---|---|"]
    lines += [f"| {s['label']} | {s['kind']} | {s['reason']} |" for s in tune.get("skipped") or []]
    return "\n".join(lines) + "\n"


def render_pareto(answer: dict, path: Path) -> None:
    from harness.analyse.report.plots import _plain, _pyplot

    plt = _pyplot()
    rows = [m for m in answer.get("measured") or [] if m.get("time_ms") and m.get("peak_bytes")]
    front = [m for m in rows if m["label"] in set(answer.get("pareto") or [])]
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    ax.scatter([m["time_ms"] for m in rows], [m["peak_bytes"] / 2**20 for m in rows], s=14,
               color="#999999", label="measured")
    front.sort(key=lambda m: m["time_ms"])
    ax.plot([m["time_ms"] for m in front], [m["peak_bytes"] / 2**20 for m in front], "o-",
            color="#4c72b0", label="Pareto front")
    win = answer.get("winner")
    if win and win.get("time_ms") and win.get("peak_bytes"):
        ax.scatter([win["time_ms"]], [win["peak_bytes"] / 2**20], marker="*", s=220, color="#dd8452",
                   zorder=3, label=f"winner: {_plain(win['label'])}")
    ax.set_xscale("log")
    ax.set_xlabel("median step time, ms (latest rung)")
    ax.set_ylabel("peak memory, MiB")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def render_html(markdown: str, png: bytes) -> str:
    image = base64.b64encode(png).decode()
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tbench tune</title></head><body>"
            f"<img id='pareto' alt='Pareto front' src='data:image/png;base64,{image}'>"
            f"<pre id='tune'>{html.escape(markdown)}</pre></body></html>\n")


def write_tune_report(run_dir) -> list[Path]:
    tune = read_tune(run_dir)
    run_dir = Path(run_dir)
    md, png, page = run_dir / "tune.md", run_dir / "pareto.png", run_dir / "tune.html"
    text = render_markdown(tune)
    md.write_text(text, encoding="utf-8")
    render_pareto(tune.get("answer") or {}, png)
    page.write_text(render_html(text, png.read_bytes()), encoding="utf-8")
    return [md, page, png]
