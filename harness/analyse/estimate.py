"""How long a run of these points will take, from the runs already under ``runs/``.

    estimate_duration(root, point_ids) -> one line for ``tbench run --dry-run``

Reads only the ``root/*/results.jsonl`` files (in modification order, so a later run wins),
never torch; unreadable files and lines are skipped, ``interrupted`` records (partial) do not
count, an unmeasured point counts at the mean of the measured ones.
"""
from __future__ import annotations

from pathlib import Path

from harness import records
from harness.analyse.units import human_duration


def previous_durations(root: Path, point_ids) -> dict[str, tuple[float, Path]]:
    """point id -> (``duration_s``, run folder) of its latest final record under ``root``."""
    wanted, found = set(point_ids), {}
    try:
        files = sorted(root.glob(f"*/{records.RESULTS_FILE}"), key=lambda f: f.stat().st_mtime)
    except OSError:
        return {}
    for path in files:
        try:
            lines = records.scan(path)
        except OSError:
            continue
        for _n, _raw, rec in lines:
            took = (rec or {}).get("duration_s")
            if (rec is not None and rec["point_id"] in wanted and rec.get("status") != "interrupted"
                    and isinstance(took, (int, float)) and took >= 0):
                found[rec["point_id"]] = (float(took), path.parent)
    return found


def estimate_duration(root: Path, point_ids: list[str]) -> str:
    """One line: the sum of the points' previous durations, where they come from, how many
    are unknown."""
    found = previous_durations(root, point_ids)
    if not found:
        return f"estimated duration: unknown (no previous run of these points under {root})"
    known = [found[p][0] for p in point_ids if p in found]
    unknown = len(point_ids) - len(known)
    total = sum(known) + unknown * sum(known) / len(known)
    folders = sorted({str(folder) for _took, folder in found.values()})
    where = folders[-1] if len(folders) == 1 else f"{len(folders)} runs under {root}"
    tail = f"; {unknown} unknown, counted at the mean" if unknown else ""
    return (f"estimated duration: ~{human_duration(total)} (from {len(known)} of {len(point_ids)} "
            f"points measured in {where}{tail})")
