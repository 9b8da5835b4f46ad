"""How much of a suite file tbench reads at all, checked before anything heavy is imported.

    too_large(path) -> the error line, or None

``MAX_YAML_BYTES``: a suite is a page of YAML; 1 MiB is generous and parses in well under a
second. ``tbench run`` asks before it imports torch, so a 50 MB file is refused at once; the
loader (``harness.suite.loader``) reads at most this many bytes whatever the file's size says,
and also caps the values after alias expansion and the nesting depth.
"""
from __future__ import annotations

import os
from pathlib import Path

MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000  # values after alias expansion: every later stage walks the expanded tree
MAX_YAML_DEPTH = 64  # suites nest about 5 deep; the pure-Python parser recurses once per level


def size_error(size: int) -> str:
    return (f"too large ({size:,} bytes); allowed: at most {MAX_YAML_BYTES:,} bytes "
            f"({MAX_YAML_BYTES // 2**20} MiB)")


def too_large(path: str | os.PathLike) -> str | None:
    """``<path>: too large ...`` when the file holds more than ``MAX_YAML_BYTES``, else None
    (a missing or unreadable file is the loader's to say)."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        return None
    return f"{path}: {size_error(size)}" if size > MAX_YAML_BYTES else None
