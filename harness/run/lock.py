"""One writer per run folder: an exclusive ``flock`` on ``RUN_DIR/.lock``, held for the run's life.

    with FolderLock(run_dir) as lock: ...   lock.note: a line when a stale lock was taken over

The lock file holds its owner (pid, host, start time, command line). A second ``tbench`` that
wants the folder (``run``, ``--resume``, ``gate``, ``profile``, ``frontier``) while the owner
runs gets ``RunDirError`` naming the owner: one line, exit 2, nothing written. The kernel drops
a ``flock`` when its holder dies, so a folder whose owner was killed (kill -9) is free again;
the file still names that owner, and the new holder says it took the lock over. The lock's
file descriptor is not inherited by the processes the run starts (the fork server, torchrun,
fresh workers: all exec'd), so none of them keeps a dead run's folder locked.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from harness.records import LOCK_FILE
from harness.run.rundir import RunDirError, now_iso


def _owner_text(owner: dict) -> str:
    return (f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started_at')}"
            + (f": {owner['command']}" if owner.get("command") else ""))


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


class FolderLock:
    """See the module docstring."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None
        self.note: str | None = None

    def read_owner(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self, create: bool = True) -> "FolderLock":
        """Take the lock; ``create=False`` (a resume): a folder that does not exist is left
        alone, unlocked (there is nothing to protect, and the caller says what is missing)."""
        if not create and not self.path.parent.is_dir():
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(f"{self.path.parent} is in use by another tbench "
                              f"({_owner_text(self.read_owner())}); wait for it to end or choose "
                              "another --out folder") from None
        before = self.read_owner()
        if before.get("pid") is not None:
            gone = "no longer runs" if not _alive(before["pid"]) or before.get("host") != socket.gethostname() \
                else "no longer holds it"
            self.note = (f"note: took over the lock of {self.path.parent} left by "
                         f"{_owner_text(before)} (it {gone})")
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": now_iso(),
                 "command": " ".join(sys.argv[:1] + sys.argv[1:])[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Drop the lock; the file stays empty (no owner) for the next writer."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
