"""A run as one pandas DataFrame, one row per point (the latest record of each).

    load_run(run_dir) -> DataFrame   provenance columns (``PROVENANCE``), then every swept/key
                                     parameter (dotted names: ``attention``, ``attention.window``,
                                     ``seq_len``), then every metric of ``METRICS`` (units in the
                                     names; missing = NaN/None, never 0), then ``samples_ms``,
                                     ``warnings`` and ``ranks``

A started run with no record yet gives no rows; a folder that does not exist or is not a run
folder raises ``BadInput``. Never imports torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.records import RESULTS_FILE, RUN_FILE, read_run_folder, read_run_info
from harness.records.metrics import LIST_COLUMNS, METRICS, PROVENANCE

if TYPE_CHECKING:
    import pandas as pd


def _row(rec: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in PROVENANCE:
        row[key] = rec.get(key, run.get(key))
    row["device"] = rec.get("params", {}).get("device", run.get("device"))
    for key, value in rec.get("params", {}).items():
        if key not in row:
            row[key] = value
    metrics = rec.get("metrics") or {}
    for key in METRICS:
        row[key] = metrics.get(key)
    for key, value in metrics.items():  # metrics added later keep their column
        row.setdefault(key, value)
    for key in LIST_COLUMNS:
        row[key] = rec.get(key) or []
    return row


def frame(records: list[dict[str, Any]], run: dict[str, Any]) -> "pd.DataFrame":
    """One row per record (see ``load_run``); ``run`` is run.json, for provenance columns."""
    import pandas as pd  # here, not at the top: a worker writing its record needs no pandas

    rows = [_row(rec, run) for rec in records]
    if not rows:
        return pd.DataFrame(columns=list(PROVENANCE) + list(METRICS) + list(LIST_COLUMNS))
    df = pd.DataFrame(rows)
    first = list(PROVENANCE)
    last = list(METRICS) + list(LIST_COLUMNS)
    params = [c for c in df.columns if c not in first and c not in last]
    return df[first + params + last]


def load_run(run_dir: str | os.PathLike) -> "pd.DataFrame":
    """One row per point of ``run_dir`` (the latest record of each). A run that has started
    (``run.json`` written) but recorded no point yet gives no rows; a folder that does not exist
    or is not a run folder raises ``BadInput`` (as ``read_run_folder``)."""
    path = Path(run_dir)
    if path.is_dir() and (path / RUN_FILE).is_file() and not (path / RESULTS_FILE).exists():
        return frame([], read_run_info(path))
    run = read_run_folder(run_dir)
    return frame(run.records, run.run)
