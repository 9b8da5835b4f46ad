"""Reading a run folder: tolerant of what a killed writer leaves, strict about anything else.

    read_records(run_dir) -> [record]   results.jsonl in file order; a partial last line (no
                                        newline: a writer killed mid-write) is skipped; any other
                                        line that is not a JSON object with a ``point_id`` raises
                                        ``CorruptRecord`` naming the file and the line number
    set_aside_corrupt(run_dir) -> [n]   corrupt lines moved to results.jsonl.corrupt (appended)
    latest_records(records)             the last record per ``point_id``, first-seen order
    read_rounds(run_dir) -> {id: [round]}   rounds.jsonl (unreadable lines skipped: a lost round
                                        is only measured again)
    read_json(path)                     a run folder's JSON object ({} when absent)
    read_run_folder(run_dir) -> RunFolder   path, latest records, run.json, env.json,
                                        suite.resolved.json (non-finite floats read as None): the
                                        one loader report, compare, gate and export use

A folder (or a ``results.jsonl`` path) that is missing, holds no results file or an unreadable
one raises ``BadInput`` (a user error: exit 2). No torch, nothing of tbench but ``files``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.records.files import (
    CORRUPT_FILE,
    ENV_FILE,
    RESOLVED_FILE,
    RESULTS_FILE,
    ROUNDS_FILE,
    RUN_FILE,
    _naming,
    _write_atomic,
    scan,
)


class BadInput(ValueError):
    """Input the user must fix (missing folder, corrupt file, unknown name): CLI exit code 2."""


class CorruptRecord(BadInput):
    """A line of a results file that is not a record (not a partial last line)."""

    def __init__(self, path: Path, line: int):
        super().__init__(f"{path}:{line}: corrupt record (not a JSON object with a point_id)")
        self.path, self.line = path, line


@dataclass
class RunFolder:
    path: Path
    records: list[dict]  # the latest record per point, file order
    run: dict  # run.json
    env: dict  # env.json
    suite: dict  # suite.resolved.json


def read_records(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of ``run_dir/results.jsonl`` in order ([] when the file does not exist)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return []
    records = []
    for n, _raw, rec in scan(path):
        if rec is None:
            raise CorruptRecord(path, n)
        records.append(rec)
    return records


def set_aside_corrupt(run_dir: str | os.PathLike) -> list[int]:
    """Move the corrupt lines of ``run_dir/results.jsonl`` to ``CORRUPT_FILE`` (appended) and
    rewrite the results without them (atomically); their line numbers, [] when there are none."""
    path = Path(run_dir) / RESULTS_FILE
    lines = scan(path) if path.exists() else []
    corrupt = [(n, raw) for n, raw, rec in lines if rec is None]
    if not corrupt:
        return []
    aside = path.with_name(CORRUPT_FILE)
    try:
        with open(aside, "ab") as f:
            f.write(b"".join(raw + b"\n" for _n, raw in corrupt))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise _naming(exc, aside)
    _write_atomic(path, b"".join(raw + b"\n" for _n, raw, rec in lines if rec is not None))
    return [n for n, _raw in corrupt]


def latest_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each point id, ordered by first appearance."""
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        latest[rec["point_id"]] = rec  # dict keeps first-insertion order
    return list(latest.values())


def finite(obj):
    """Non-finite floats (NaN, inf) become None: unavailable metrics are null, never NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def read_json(path: Path) -> dict:
    """The JSON object in ``path`` ({} when absent, non-finite floats as None); ``BadInput`` if
    it is not one."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return finite(data)


def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run_dir/run.json`` ({} when absent)."""
    return read_json(Path(run_dir) / RUN_FILE)


def read_run_folder(run_dir: str | os.PathLike) -> RunFolder:
    """Load a run folder, or the folder of a given ``results.jsonl`` (see the module docstring)."""
    path = Path(run_dir)
    if path.is_file() and path.name == RESULTS_FILE:
        path = path.parent
    if not path.is_dir():
        raise BadInput(f"{run_dir}: not a run folder (no such directory); give the folder "
                       f"`tbench run` wrote (runs/<suite>-<time>) or its {RESULTS_FILE}")
    if not (path / RESULTS_FILE).is_file():
        raise BadInput(f"{run_dir}: not a run folder (it has no {RESULTS_FILE}); give the folder "
                       f"`tbench run` wrote (runs/<suite>-<time>) or its {RESULTS_FILE}")
    try:
        records = latest_records(read_records(path))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise BadInput(f"{run_dir}: unreadable results ({e})") from None
    for n, r in enumerate(records):
        if not isinstance(r, dict) or "point_id" not in r or "status" not in r:
            raise BadInput(f"{run_dir}: record {n + 1} lacks point_id/status")
    return RunFolder(path, finite(records), read_run_info(path), read_json(path / ENV_FILE),
                     read_json(path / RESOLVED_FILE))




def read_rounds(run_dir: str | os.PathLike) -> dict[str, list[dict]]:
    """The finished rounds of each point in ``rounds.jsonl`` (unreadable lines skipped)."""
    path = Path(run_dir) / ROUNDS_FILE
    if not path.exists():
        return {}
    out: dict[str, list[dict]] = {}
    for _n, _raw, rec in scan(path):
        if rec is not None:
            out.setdefault(rec["point_id"], []).append(rec)
    return out
