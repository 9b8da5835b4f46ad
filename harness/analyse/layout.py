"""How a run's points are laid out, in the report's tables and in the answers alike, so both
name a strategy the same way.

    layout(records) -> Layout     which param gives the columns (``seq_len``), the rows (the
                                  varying strategy axes) and the tables (every other varying
                                  param); ``Layout.row_label(rec)`` is a strategy's label, the
                                  text of its table row and of its answers
    table_groups(records, lay)    (values of the table params, records) per table
    baselines(groups, lay, wanted) the baseline row per table: ``wanted`` (``--baseline``) as a
                                  row label (``dense · fused``), a part of one (``dense``), a point
                                  label's strategy part (``dense/fused/fixed/fp32/none`` of
                                  ``dense/fused/fixed/fp32/none · forward B=1 S=256``, as the CLI
                                  prints it) or a '/'-part of that which only one row has; by
                                  default the row whose attention is ``dense``, else the first.
                                  An unknown ``wanted`` raises ``BadInput`` listing the labels
    point_flags(rec)              the badges of a point (``contended``, ``noisy``, ``drift``,
                                  ``single_round``); a warning "noisy measurement" is ``noisy``

A param ``X`` is a strategy axis when the records carry ``X.name``, and ``X.p`` belongs to
axis ``X``. Never imports torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from harness.records import BadInput

COLUMN_AXIS = "seq_len"
POINT_LABEL = "point"  # the row key of last resort: the record's label
FLAGS = ("contended", "noisy", "drift", "single_round")
MAX_LISTED = 20  # labels an error message lists


def point_flags(rec: dict) -> tuple[str, ...]:
    have = {str(f) for f in rec.get("flags") or []}
    if any(str(w).startswith("noisy measurement") for w in rec.get("warnings") or []):
        have.add("noisy")
    return tuple([f for f in FLAGS if f in have] + sorted(have - set(FLAGS)))


def value(rec: dict, key: str):
    if key == POINT_LABEL:
        return rec.get("label", rec.get("point_id"))
    return (rec.get("params") or {}).get(key)


def _json(rec: dict, key: str) -> str:
    return json.dumps(value(rec, key), sort_keys=True, default=str)


def sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def param_keys(records: list[dict]) -> list[str]:
    """Every param name, in order of first appearance (the runner's: axis, then its params)."""
    return list(dict.fromkeys(k for r in records for k in (r.get("params") or {})))


def strategy_keys(records: list[dict], keys: list[str]) -> list[str]:
    """Those of ``keys`` that are strategy axes (``X`` with ``X.name`` among the params) or
    their params (``X.window``)."""
    params = set(param_keys(records))
    return [k for k in keys if f"{k.split('.')[0]}.name" in params]


def _fixed_by_head(records: list[dict], key: str) -> bool:
    """``X.p`` whose value is the same wherever ``X``'s is (a strategy's label carries its
    params): grouping by ``X`` already tells its points apart."""
    head = key.split(".")[0]
    if head == key:
        return False
    seen: dict[str, str] = {}
    return all(seen.setdefault(_json(r, head), _json(r, key)) == _json(r, key) for r in records)


def varying(records: list[dict]) -> list[str]:
    keys = sorted(k for k in param_keys(records) if len({_json(r, k) for r in records}) > 1)
    return [k for k in keys if not _fixed_by_head(records, k)]


@dataclass(frozen=True)
class Layout:
    column: str | None      # the param of the columns (seq_len where it varies)
    rows: tuple[str, ...]   # the params of the rows: the varying strategy axes, else the others
    tables: tuple[str, ...]  # every other varying param: one table per combination
    row_axis: str           # what the rows are: "strategy", else the params named

    def row_parts(self, rec: dict) -> tuple[str, ...]:
        return tuple(str(value(rec, k)) for k in self.rows)

    def row_label(self, rec: dict) -> str:
        return " · ".join(self.row_parts(rec)) or str(rec.get("suite", "run"))


def layout(records: list[dict]) -> Layout:
    var = varying(records)
    col = COLUMN_AXIS if COLUMN_AXIS in var else None
    strategy_rows = strategy_keys(records, [k for k in param_keys(records) if k in var])
    rows = strategy_rows or [k for k in var if k != col]
    tables = [k for k in var if k != col and k not in rows]
    if len({tuple(_json(r, k) for k in var) for r in records}) < len(records):
        rows = rows + [POINT_LABEL]  # points no param tells apart: a row each, by label
    row_axis = "strategy" if rows == strategy_rows else " · ".join(rows)
    return Layout(col, tuple(rows), tuple(tables), row_axis)


def table_groups(records: list[dict], lay: Layout) -> list[tuple[tuple, list[dict]]]:
    """(values of ``lay.tables``, records) per table, sorted by those values."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(_json(r, k) for k in lay.tables), []).append(r)
    values = {t: tuple(value(g[0], k) for k in lay.tables) for t, g in groups.items()}
    order = sorted(groups, key=lambda t: [sort_key(v) for v in values[t]])
    return [(values[t], groups[t]) for t in order]


def row_labels(recs: list[dict], lay: Layout) -> dict[str, tuple[str, ...]]:
    """Row label -> its parts, in suite order (the first record of each row, by index)."""
    parts: dict[str, tuple[str, ...]] = {}
    first: dict[str, int] = {}
    for r in recs:
        parts.setdefault(lay.row_label(r), lay.row_parts(r))
        first.setdefault(lay.row_label(r), r.get("index", 0))
    return {lbl: parts[lbl] for lbl in sorted(parts, key=lambda lbl: (first[lbl], lbl))}


def _prefix(rec: dict) -> str:
    """A point label's strategy part: ``dense/fused/fixed/fp32/none`` of
    ``dense/fused/fixed/fp32/none · forward B=1 S=256``."""
    return str(rec.get("label", "")).split(" · ")[0]


def _pick(recs: list[dict], lay: Layout, wanted: str | None) -> str | None:
    rows = row_labels(recs, lay)
    if wanted is None:
        return next((lbl for lbl, parts in rows.items() if "dense" in parts), next(iter(rows), None))
    by_part = [lbl for lbl, parts in rows.items() if lbl == wanted or wanted in parts]
    if by_part:
        return wanted if wanted in rows else by_part[0]
    by_prefix = {lay.row_label(r) for r in recs if _prefix(r) == wanted}
    by_piece = {lay.row_label(r) for r in recs if wanted in _prefix(r).split("/")}
    for found in (by_prefix, by_piece):
        if len(found) == 1:
            return found.pop()
    return None


def baselines(groups: list[tuple[tuple, list[dict]]], lay: Layout,
              wanted: str | None = None) -> list[str | None]:
    """The baseline row label of each table of ``table_groups`` (see the module docstring)."""
    picked = [_pick(recs, lay, wanted) for _, recs in groups]
    if wanted is not None and groups and all(p is None for p in picked):
        recs = [r for _, g in groups for r in g]
        rows = list(dict.fromkeys(lbl for _, g in groups for lbl in row_labels(g, lay)))
        prefixes = list(dict.fromkeys(_prefix(r) for r in recs if " · " in str(r.get("label"))))
        raise BadInput(f"baseline strategy {wanted!r} not found; allowed: a row label "
                       f"({_listed(rows)})" + (f", a point label's strategy part ({_listed(prefixes)})"
                                               " or one '/'-part of it that only one row has"
                                               if prefixes else ""))
    return [p if p is not None else _pick(recs, lay, None) for p, (_, recs) in zip(picked, groups)]


def _listed(labels: list[str]) -> str:
    more = len(labels) - MAX_LISTED
    return ", ".join(labels[:MAX_LISTED]) + (f", … ({more} more)" if more > 0 else "")
