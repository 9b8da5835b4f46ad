"""The report's detail tables: one per question the suite asks.

    build_tables(records, baseline=None) -> [Table]

Points are grouped by the params that vary across the run (``harness.analyse.layout``):
sequence length gives the columns, the strategy axes that vary give the rows, every other
varying param one table per value; with no strategy axis varying, the other params give the
rows (the header names them). A sub-param ``X.p`` counts as a param of its own unless ``X``'s
value fixes it, so every point gets its own cell. A failed point's reason is listed under its
table. Never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.analyse.layout import Layout, baselines, layout, row_labels, sort_key, table_groups, value
from harness.analyse.report.cells import STATUS_TEXT, Cell, cell
from harness.records import memory_metric


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
    rows = [(lbl, [cell(cells.get((lbl, c)), cells.get((base_label, c)), mem_metric)
                   for c in columns]) for lbl in row_labels(recs, lay)]
    failures = [(r.get("label", r.get("point_id", "")), STATUS_TEXT.get(r["status"], r["status"]),
                 next(iter((r.get("error") or "").strip().splitlines()[-1:]), ""))
                for r in sorted(recs, key=lambda r: r.get("index", 0)) if r.get("status") != "ok"]
    return Table(title, col, [str(c) for c in columns] if col else ["result"], rows, base_label,
                 mem_metric, failures, recs, lay.row_axis or "strategy")


