"""Human units of the reports and the CLI: ``fmt_ms`` (0.885 ms, 312 ms, 1.52 s, with a CI in
the same unit), ``fmt_bytes`` (KiB / MiB / GiB), ``fmt_num`` (25.6k, 1.2M), ``human_duration``
(42 s, 3 min 20 s, 1 h 05 min)."""
from __future__ import annotations


def _sig(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def fmt_ms(ms: float, low: float | None = None, high: float | None = None) -> str:
    """``0.885 ms``, ``312 ms``, ``1.52 s``; with a CI, ``10 ms [9.9, 10.1]`` (same unit)."""
    scale, unit = (1000.0, "s") if abs(ms) >= 1000 else (1.0, "ms")
    text = f"{_sig(ms / scale)} {unit}"
    if low is not None and high is not None:
        text += f" [{_sig(low / scale)}, {_sig(high / scale)}]"
    return text


def fmt_bytes(n) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_num(x: float) -> str:
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.3g}"


def human_duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``1 h 05 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
