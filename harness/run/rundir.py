"""The run folder, and its one owner: every file of a run except the records is written here.

    open_run(run_dir, points, *, resume=False, doc=None, on_corrupt="refuse") -> Opened
    close_run(run_dir, run, state, reason=None)     state: "finished" | "interrupted" | "failed"
    resolved_doc(source, device, sets, suite, points) -> dict   what suite.resolved.json holds
    default_run_dir(name) -> Path                   runs/<name>-<local time>

``open_run`` refuses a folder that already holds results unless ``resume``. Resuming, it
refuses a folder without ``run.json``, one whose environment fingerprint differs from now (the
results would not be comparable), given ``doc``, one whose suite resolved to other points, and
a results file with a corrupt line (the error names the file and the line) -- unless
``on_corrupt="skip"``: then such lines move to ``results.jsonl.corrupt`` with a ``warning:``
line on stderr each, and the points they held run again. ``results.jsonl`` and
``rounds.jsonl`` are read once, here: ``Opened`` carries the latest record of every point,
which of them are final (``done``: not ``interrupted``) and the finished rounds of the others
(a point that was running when tbench died has no record and goes on from them).
A new run writes ``suite.resolved.json`` (when ``doc`` is given), ``env.json`` and ``run.json``
(suite, device, device_name, started_at/finished_at (ISO 8601 UTC), state, fingerprint,
points_total, git commit and dirtiness) before the first point runs. ``close_run`` records the
end: ``state`` and, for ``interrupted`` / ``failed``, ``reason`` (the signal, the I/O error).
Refusals are ``RunDirError`` (exit 2); I/O failures are ``OSError`` naming the file (exit 2 too).
The folder's writer holds its lock (``harness.run.lock``) while any of this happens.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness import records
from harness.records import CORRUPT_FILE, RESOLVED_FILE, RESULTS_FILE, ROUNDS_FILE, RUN_FILE
from harness.run import env as env_mod


class RunDirError(ValueError):
    """The run folder cannot be used as asked (results without --resume, another run, changed env)."""


@dataclass
class Opened:
    """What ``open_run`` found and wrote."""

    run: dict  # run.json's content
    env: dict  # env.json's
    done: set[str] = field(default_factory=set)  # points whose latest record is final
    records: list[dict] = field(default_factory=list)  # the latest record of each point
    rounds: dict[str, list[dict]] = field(default_factory=dict)  # finished rounds per point


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolved_doc(source, device: str, sets: list[str], suite, points) -> dict:
    """What suite.resolved.json holds: the source, the overrides, the resolved suite, every
    point, and ``files``: the sha256 of every file the points name (a lengths file, a model's
    config), which a resume checks."""
    data = [p.to_json() for p in points]
    return {"source": str(source), "device": device, "overrides": list(sets),
            "suite": suite.model_dump(mode="json"), "points": data, "files": named_files(data)}


def named_files(points: list[dict]) -> dict[str, str]:
    """path -> sha256 of every existing file an absolute path in the points' JSON names."""
    import hashlib

    found: dict[str, str] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str) and node.startswith("/") and node not in found:
            path = Path(node)
            if path.is_file():
                found[node] = hashlib.sha256(path.read_bytes()).hexdigest()

    walk(points)
    return dict(sorted(found.items()))


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def latest_on_resume(run_dir: Path, on_corrupt: str) -> list[dict]:
    """The latest record of each point; corrupt lines refused or set aside (``on_corrupt``)."""
    if on_corrupt == "skip":
        for n in records.set_aside_corrupt(run_dir):
            print(f"warning: {run_dir / RESULTS_FILE}:{n}: corrupt record skipped (moved to "
                  f"{CORRUPT_FILE}); a point no other line records runs again", file=sys.stderr)
    try:
        return records.latest_records(records.read_records(run_dir))
    except records.CorruptRecord as exc:
        raise RunDirError(f"--resume: {exc}; repair or delete that line, or rerun with "
                          "--on-corrupt skip to set it aside") from None


def _read_object(path: Path) -> dict:
    try:
        return records.read_json(path)
    except records.BadInput as exc:
        raise RunDirError(f"--resume: {exc}") from None


def _check_resume(run_dir: Path, points, doc: dict | None, fp: str) -> dict:
    run_file, resolved = run_dir / RUN_FILE, run_dir / RESOLVED_FILE
    if not run_file.is_file() or (doc is not None and not resolved.is_file()):
        missing = resolved if doc is not None and not resolved.is_file() else run_file
        raise RunDirError(f"--resume: {missing} not found; --out must name the folder of the run "
                          "to finish")
    if doc is not None:
        stored = _read_object(resolved)
        for path, digest in (stored.get("files") or {}).items():
            now_digest = (doc.get("files") or {}).get(path)
            if now_digest != digest:
                raise RunDirError(f"--resume: {path} changed since the run started (sha256 "
                                  f"{digest[:12]} then, {(now_digest or 'missing')[:12]} now): "
                                  "resuming would pool rounds measured on other data; restore "
                                  "it, or run into a new folder")
        before = [p.get("id") for p in stored.get("points") or []]
        now = [p.id for p in points]
        if before != now:
            raise RunDirError(f"--resume: the suite now resolves to different points than the run "
                              f"in {run_dir} ({len(set(now) - set(before))} new, "
                              f"{len(set(before) - set(now))} gone); run it into a new folder")
    run = _read_object(run_file)
    if run.get("fingerprint") != fp:
        raise RunDirError(
            f"{run_dir}: the environment changed since this run started (fingerprint "
            f"{run.get('fingerprint')} in run.json, {fp} now: one of torch, CUDA, GPU, CPU, "
            "usable cores, Python differs); results would not be comparable. Start a new "
            "run folder instead of --resume.")
    return run


def _resume(run_dir: Path, points, doc, on_corrupt: str, env: dict) -> Opened:
    run = _check_resume(run_dir, points, doc, env_mod.fingerprint(env))
    latest = latest_on_resume(run_dir, on_corrupt)  # before run.json changes: a refusal keeps it
    done = {r["point_id"] for r in latest if r.get("status") != "interrupted"}
    run.pop("reason", None)
    run.update(state="running", resumed_at=run.get("resumed_at", []) + [now_iso()])
    records.write_json_atomic(run_dir / RUN_FILE, run)
    return Opened(run, env, done, [r for r in latest if r["point_id"] in done],
                  records.read_rounds(run_dir))


def open_run(run_dir: Path, points, *, resume: bool = False, doc: dict | None = None,
             on_corrupt: str = "refuse") -> Opened:
    """Check or start the run folder (see the module docstring)."""
    run_dir = Path(run_dir)
    env = env_mod.collect_env()
    if resume:
        return _resume(run_dir, points, doc, on_corrupt, env)
    if any((run_dir / f).is_file() and (run_dir / f).stat().st_size > 0
           for f in (RESULTS_FILE, ROUNDS_FILE)):
        raise RunDirError(f"{run_dir} already holds results; choose another --out folder "
                          "(tbench run --resume finishes an interrupted run)")
    run_dir.mkdir(parents=True, exist_ok=True)
    if doc is not None:
        records.write_json_atomic(run_dir / RESOLVED_FILE, doc, indent=2)
    records.write_json_atomic(run_dir / records.ENV_FILE, env)
    first = points[0] if points else None
    run = {"suite": first.suite if first else None, "device": first.device if first else None,
           "device_name": (env.get("gpu") or {}).get("name") if first and first.device == "cuda"
           else (env.get("cpu") or {}).get("model"),
           "started_at": now_iso(), "finished_at": None, "state": "running",
           "fingerprint": env_mod.fingerprint(env), "points_total": len(points),
           "git_commit": env.get("git", {}).get("commit"), "git_dirty": env.get("git", {}).get("dirty")}
    records.write_json_atomic(run_dir / RUN_FILE, run)
    return Opened(run, env)


def close_run(run_dir: Path, run: dict, state: str, reason: str | None = None) -> None:
    """Record the run's end in run.json: ``finished``, or ``interrupted`` / ``failed`` and why."""
    run.update(finished_at=now_iso(), state=state)
    if reason:
        run["reason"] = reason
    records.write_json_atomic(Path(run_dir) / RUN_FILE, run)
