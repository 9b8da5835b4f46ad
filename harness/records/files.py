"""The files of a run folder and how they are written: the bottom layer every stage shares.

    RESULTS_FILE, ROUNDS_FILE, RUN_FILE, ENV_FILE, RESOLVED_FILE, CORRUPT_FILE, LOCK_FILE
    write_json_atomic(path, data)   temporary file, fsync, rename
    append_record(path, record)     one line appended and fsync'ed before returning (a partial
                                    last line left by a killed writer is cut first, so the file
                                    stays valid JSON Lines)
    scan(path) -> [(line number, line, record or None)]   every complete line of a JSON Lines file

Both writers raise ``OSError`` naming the file (disk full, read-only, permission denied) and
leave the file as it was: no temporary file, no half-written line. Imports nothing of tbench,
no torch: the child worker, the launcher, Slurm's job and the offline analysis all use it.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"  # one record per finished point
ROUNDS_FILE = "rounds.jsonl"  # one line per finished round, until its point's record exists
RUN_FILE = "run.json"
ENV_FILE = "env.json"
RESOLVED_FILE = "suite.resolved.json"
CORRUPT_FILE = RESULTS_FILE + ".corrupt"
LOCK_FILE = ".lock"  # held (flock) by the one process writing the folder


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a read-only folder cannot drop it either
            tmp.unlink(missing_ok=True)
        if exc.filename == str(tmp):  # the user knows the file, not our temporary
            exc.filename = None
        raise _naming(exc, path)


def write_json_atomic(path: str | os.PathLike, data: dict, indent: int | None = None) -> None:
    """Temporary file, fsync, rename: a reader sees the old file or the whole new one."""
    _write_atomic(Path(path), json.dumps(data, default=str, indent=indent).encode("utf-8"))


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` when the failing call (write, fsync) named no file."""
    if exc.filename is None:
        exc.filename = str(path)
    return exc


def _drop_partial_tail(path: Path) -> None:
    """Cut a line left unfinished by a killed writer, so the next record starts on its own line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append ``record`` as one line and fsync, so it survives a kill right after return. On an
    OSError (disk full) the file is cut back to its old end: no half line stays behind."""
    path = Path(path)
    line = memoryview((json.dumps(record, default=str, allow_nan=True) + "\n").encode("utf-8"))
    try:
        _drop_partial_tail(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                while line:  # unbuffered: no write is left pending to land after the cut
                    line = line[os.write(fd, line):]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):  # else the reader skips the partial line
                    os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)
    except OSError as exc:
        raise _naming(exc, path)


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The record on one line, or None if the line is not one."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return rec if isinstance(rec, dict) and "point_id" in rec else None


def scan(path: Path) -> list[tuple[int, bytes, dict[str, Any] | None]]:
    """(line number, line, record or None if corrupt) per non-blank line of ``path``, except
    a last line without its newline: a writer killed mid-line, so the point is not finished."""
    *complete, _partial = path.read_bytes().split(b"\n")
    return [(n, raw, _parse(raw)) for n, raw in enumerate(complete, start=1) if raw.strip()]


