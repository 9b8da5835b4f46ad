"""A run folder from a resolved suite to its reports: the part ``tbench run`` and ``tbench gate``
share around the runner.

    resolved_doc(source, device, sets, suite, points) -> dict   what suite.resolved.json holds
    run_suite(run_dir, source, sets, suite, points, *, resume=False, progress=None) -> RunSummary
    write_reports(run_dir) -> str | None                        a warning line, or None
    default_run_dir(name) -> Path                               runs/<name>-<local time>

``run_suite`` refuses a folder that already holds results (unless ``resume``; then the suite
must resolve to the same points as the run being finished) by raising ``SuiteError``, writes
``RUN_DIR/suite.resolved.json`` (source, device, overrides, the resolved suite, every point)
before the first point runs, then hands the points to ``harness.runner.run_sweep``.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from harness.errors import SuiteError
from harness.results import RESOLVED_FILE, RESULTS_FILE
from harness.worker import write_json_atomic


def resolved_doc(source, device: str, sets: list[str], suite, points) -> dict:
    return {"source": str(source), "device": device, "overrides": list(sets),
            "suite": suite.model_dump(mode="json"), "points": [p.to_json() for p in points]}


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def _check_resume(run_dir: Path, doc: dict) -> None:
    resolved = run_dir / RESOLVED_FILE
    if not resolved.is_file():
        raise SuiteError([f"--resume: {resolved} not found; --out must name the folder of the "
                          "run to finish"])
    before = [p["id"] for p in json.loads(resolved.read_text())["points"]]
    now = [p["id"] for p in doc["points"]]
    if before != now:
        raise SuiteError([f"--resume: the suite now resolves to different points than the run "
                          f"in {run_dir} ({len(set(now) - set(before))} new, "
                          f"{len(set(before) - set(now))} gone); run it into a new folder"])


def prepare(run_dir: Path, doc: dict, resume: bool = False) -> None:
    """Refuse a folder that holds another run; write suite.resolved.json (new run)."""
    if resume:
        _check_resume(run_dir, doc)
        return
    results = run_dir / RESULTS_FILE
    if results.is_file() and results.stat().st_size > 0:
        raise SuiteError([f"{run_dir} already holds results; choose another --out folder "
                          "(tbench run --resume finishes an interrupted run)"])
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / RESOLVED_FILE, doc, indent=2)


def run_suite(run_dir: Path, source, sets: list[str], suite, points, *, resume: bool = False,
              progress=None):
    """Prepare ``run_dir`` and run every point (``harness.runner.run_sweep``): RunSummary."""
    from harness import runner

    prepare(Path(run_dir), resolved_doc(source, points[0].device, sets, suite, points), resume)
    return runner.run_sweep(points, run_dir, resume=resume, progress=progress)


def write_reports(run_dir) -> str | None:
    """report.md and report.html; a warning instead of an exception, as the results are on disk."""
    from harness import report

    try:
        report.write_reports(run_dir)
    except Exception as exc:  # a report bug must not hide the results
        return (f"warning: the report could not be written ({type(exc).__name__}: {exc}); "
                f"rerun with: tbench report {run_dir}")
    return None
