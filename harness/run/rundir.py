"""The run folder, and its one owner: every file of a run except the records is written here.

    open_run(run_dir, points, *, resume=False, doc=None) -> (run, done_ids)
    close_run(run_dir, run, state)                  state: "finished" | "interrupted"
    resolved_doc(source, device, sets, suite, points) -> dict   what suite.resolved.json holds
    write_reports(run_dir) -> str | None            a warning line, or None
    default_run_dir(name) -> Path                   runs/<name>-<local time>

``open_run`` refuses a folder that already holds results unless ``resume``. Resuming, it
refuses a folder without ``run.json``, one whose environment fingerprint differs from now (the
results would not be comparable), and, given ``doc``, one whose suite resolved to other points.
A new run writes ``suite.resolved.json`` (when ``doc`` is given), ``env.json`` and ``run.json``
(suite, device, device_name, started_at/finished_at (ISO 8601 UTC), state, fingerprint,
points_total, git commit and dirtiness) before the first point runs. ``done_ids`` are the points
whose latest record is final (not ``interrupted``). Refusals are ``RunDirError`` (exit 2).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from harness.analyse import results
from harness.analyse.results import RESOLVED_FILE, RESULTS_FILE, RUN_FILE, write_json_atomic
from harness.run import env as env_mod


class RunDirError(ValueError):
    """The run folder cannot be used as asked (results without --resume, another run, changed env)."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolved_doc(source, device: str, sets: list[str], suite, points) -> dict:
    return {"source": str(source), "device": device, "overrides": list(sets),
            "suite": suite.model_dump(mode="json"), "points": [p.to_json() for p in points]}


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def finished_ids(run_dir: Path) -> set[str]:
    return {r["point_id"] for r in results.latest_records(results.read_records(run_dir))
            if r.get("status") != "interrupted"}


def _check_resume(run_dir: Path, points, doc: dict | None, fp: str) -> dict:
    run_file, resolved = run_dir / RUN_FILE, run_dir / RESOLVED_FILE
    if not run_file.is_file() or (doc is not None and not resolved.is_file()):
        missing = resolved if doc is not None and not resolved.is_file() else run_file
        raise RunDirError(f"--resume: {missing} not found; --out must name the folder of the run "
                          "to finish")
    if doc is not None:
        before = [p["id"] for p in json.loads(resolved.read_text())["points"]]
        now = [p.id for p in points]
        if before != now:
            raise RunDirError(f"--resume: the suite now resolves to different points than the run "
                              f"in {run_dir} ({len(set(now) - set(before))} new, "
                              f"{len(set(before) - set(now))} gone); run it into a new folder")
    run = json.loads(run_file.read_text())
    if run.get("fingerprint") != fp:
        raise RunDirError(
            f"{run_dir}: the environment changed since this run started (fingerprint "
            f"{run.get('fingerprint')} in run.json, {fp} now: one of torch, CUDA, GPU, CPU, "
            "usable cores, Python differs); results would not be comparable. Start a new "
            "run folder instead of --resume.")
    return run


def open_run(run_dir: Path, points, *, resume: bool = False,
             doc: dict | None = None) -> tuple[dict, set[str]]:
    """Check or start the run folder (see the module docstring): (run.json's content, done ids)."""
    run_dir = Path(run_dir)
    env = env_mod.collect_env()
    fp = env_mod.fingerprint(env)
    if resume:
        run = _check_resume(run_dir, points, doc, fp)
        done = finished_ids(run_dir)  # before anything is written: a corrupt file refuses here
        run.update(state="running", resumed_at=run.get("resumed_at", []) + [now_iso()])
        write_json_atomic(run_dir / RUN_FILE, run)
        return run, done
    if (run_dir / RESULTS_FILE).is_file() and (run_dir / RESULTS_FILE).stat().st_size > 0:
        raise RunDirError(f"{run_dir} already holds results; choose another --out folder "
                          "(tbench run --resume finishes an interrupted run)")
    run_dir.mkdir(parents=True, exist_ok=True)
    if doc is not None:
        write_json_atomic(run_dir / RESOLVED_FILE, doc, indent=2)
    write_json_atomic(run_dir / results.ENV_FILE, env)
    first = points[0] if points else None
    run = {"suite": first.suite if first else None, "device": first.device if first else None,
           "device_name": (env.get("gpu") or {}).get("name") if first and first.device == "cuda"
           else (env.get("cpu") or {}).get("model"),
           "started_at": now_iso(), "finished_at": None, "state": "running", "fingerprint": fp,
           "points_total": len(points), "git_commit": env.get("git", {}).get("commit"),
           "git_dirty": env.get("git", {}).get("dirty")}
    write_json_atomic(run_dir / RUN_FILE, run)
    return run, set()


def close_run(run_dir: Path, run: dict, state: str) -> None:
    """Record the run's end in run.json (``finished`` or ``interrupted``)."""
    run.update(finished_at=now_iso(), state=state)
    write_json_atomic(Path(run_dir) / RUN_FILE, run)


def write_reports(run_dir) -> str | None:
    """report.md and report.html; a warning instead of an exception, as the results are on disk."""
    from harness.analyse import report

    try:
        report.write_reports(run_dir)
    except Exception as exc:  # a report bug must not hide the results
        return (f"warning: the report could not be written ({type(exc).__name__}: {exc}); "
                f"rerun with: tbench report {run_dir}")
    return None
