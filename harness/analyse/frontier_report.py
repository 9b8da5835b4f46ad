"""The report of a frontier run folder: ``frontier.md`` and ``frontier.png``.

Input: ``RUN_DIR/frontier.jsonl`` (one line per point, ``harness.run.frontier.frontier_json``).
Output: ``write_frontier_report(run_dir) -> [paths]``: a Markdown summary (per point: the
frontier, what limited it, the memory model's predicted frontier, throughput and peak memory at
the frontier, then every probe as evidence: value, status, measured and predicted peak) and a
bar chart, one bar per point (strategy x frontier), written with matplotlib like
``harness.analyse.report.plots``. A predicted frontier off the measured one by more than the memory
model's tolerance is listed as a finding. Never imports torch.
"""
from __future__ import annotations

from pathlib import Path

from harness import records
from harness.records.metrics import MEM_MODEL_TOLERANCE as TOLERANCE
from harness.analyse.units import fmt_bytes

FRONTIER_FILE = "frontier.jsonl"


def read_frontiers(run_dir) -> list[dict]:
    path = Path(run_dir) / FRONTIER_FILE
    if not path.is_file():
        raise records.BadInput(f"{path} not found: not a frontier run folder (tbench frontier)")
    # a resumed frontier writes a point's line again: the latest one counts
    return records.latest_records([rec for _n, _raw, rec in records.scan(path) if rec is not None])


def _name(f: dict) -> str:
    return f["label"]


def _mb(value) -> str:
    return fmt_bytes(value)


def render_markdown(frontiers: list[dict]) -> str:
    if not frontiers:
        return "# Frontier\n\nNo point finished.\n"
    axis, budget = frontiers[0]["axis"], frontiers[0]["budget_bytes"]
    lines = [f"# Frontier: largest `{axis}` within {fmt_bytes(budget)}", "",
             "| point | frontier | limited by | predicted | tokens/s at frontier | peak at frontier "
             "| probes |",
             "|---|---:|---|---:|---:|---:|---:|"]
    findings = []
    for f in frontiers:
        tps = f.get("tokens_per_s_at_frontier")
        lines.append(f"| {_name(f)} | {f['value'] if f['value'] is not None else '—'} | "
                     f"{f['limited_by']} | {f['predicted_value'] if f['predicted_value'] else '—'} | "
                     f"{f'{tps:,.0f}' if tps else '—'} | {_mb(f.get('peak_bytes_at_frontier'))} | "
                     f"{len(f['probes'])} |")
        if f["value"] and f["predicted_value"]:
            off = f["predicted_value"] / f["value"] - 1
            if abs(off) > TOLERANCE:
                findings.append(f"- {_name(f)}: the memory model predicted {f['predicted_value']}, "
                                f"the probes found {f['value']} ({off:+.0%})")
    lines += ["", "## Findings", ""]
    lines += findings or [f"- every predicted frontier is within {TOLERANCE:.0%} of the measured one"]
    lines += ["", "## Probes (evidence)", ""]
    for f in frontiers:
        lines += [f"### {_name(f)}", "", "| value | status | peak measured | peak predicted | tokens/s |",
                  "|---:|---|---:|---:|---:|"]
        for p in sorted(f["probes"], key=lambda p: p["value"]):
            tps = p.get("tokens_per_s")
            lines.append(f"| {p['value']} | {p['status']} | {_mb(p.get('peak_bytes'))} | "
                         f"{_mb(p.get('predicted_bytes'))} | {f'{tps:,.0f}' if tps else '—'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def render_chart(frontiers: list[dict], path: Path) -> None:
    from harness.analyse.report.plots import _plain, _pyplot

    plt = _pyplot()
    n = max(1, len(frontiers))
    fig, ax = plt.subplots(figsize=(9.0, 1.0 + 0.4 * n))
    names = [_plain(_name(f)) for f in frontiers]
    values = [f["value"] or 0 for f in frontiers]
    ax.barh(range(len(values)), values, color="#4c72b0", label="measured frontier")
    predicted = [(i, f["predicted_value"]) for i, f in enumerate(frontiers) if f["predicted_value"]]
    if predicted:
        ax.scatter([v for _i, v in predicted], [i for i, _v in predicted], marker="|", s=200,
                   color="#dd8452", label="predicted", zorder=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    if frontiers:
        ax.set_xlabel(f"largest {frontiers[0]['axis'].split('.')[-1]} within "
                      f"{fmt_bytes(frontiers[0]['budget_bytes'])}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def write_frontier_report(run_dir) -> list[Path]:
    frontiers = read_frontiers(run_dir)
    md, png = Path(run_dir) / "frontier.md", Path(run_dir) / "frontier.png"
    md.write_text(render_markdown(frontiers), encoding="utf-8")
    render_chart(frontiers, png)
    return [md, png]
