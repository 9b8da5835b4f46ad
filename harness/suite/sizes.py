"""Sizes in bytes as people write them: ``"2GiB"``, ``"512MiB"``, ``"1.5GB"``, ``"1000000"``.

    parse_size(text) -> bytes (>= 1), or None when ``text`` is not a size
    SIZE_HELP: what is allowed, for error lines
"""
from __future__ import annotations

import re

UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
         "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
SIZE_HELP = ("a positive size such as 2GiB, 512MiB, 40GB or a number of bytes (units: B, KB, MB, "
             "GB, TB, KiB, MiB, GiB, TiB)")


def parse_size(text) -> int | None:
    if isinstance(text, int) and not isinstance(text, bool):
        return text if text >= 1 else None
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in UNITS or float(match.group(1)) * UNITS[unit] < 1:
        return None
    return int(float(match.group(1)) * UNITS[unit])
