"""Sequence lengths of a variable-length workload, seeded and reproducible.

``sample_lengths(spec, n, seed, max_length)`` turns a plain dict (a suite's ``lengths`` block)
into ``n`` ints in ``[1, max_length]``. Distributions and their parameters:

    fixed      length (default max_length)            every sequence the same
    uniform    low (1), high (max_length)              integers, both ends included
    normal     mean, std                               rounded
    lognormal  mean, sigma  |  median, sigma           ``mean`` is the mean of the underlying
               normal (numpy's convention: median = exp(mean)); or give ``median`` in tokens
    zipf       alpha (> 0), low (1), high (max_length) P(L = k) proportional to k**-alpha on
               [low, high]: a bounded Zipf law, many short sequences and a long tail
    file       path, format ("auto" | "lengths" | "text")
               "lengths": one integer per line; "text": one sequence per line, its length is its
               number of whitespace-separated tokens; "auto": "lengths" if every non-empty line
               is one integer. The file's first ``n`` sequences are used, cycled if it has fewer.

Every value is clipped to ``[1, max_length]``. Draws use ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PARAMS = {  # distribution -> (required, optional) parameters; lognormal also needs mean or median
    "fixed": ((), ("length",)),
    "uniform": ((), ("low", "high")),
    "normal": (("mean", "std"), ()),
    "lognormal": (("sigma",), ("mean", "median")),
    "zipf": (("alpha",), ("low", "high")),
    "file": (("path",), ("format",)),
}


def _need(spec: dict, key: str, dist: str):
    if spec.get(key) is None:
        raise ValueError(f"lengths.{key}: required for distribution {dist!r}, got nothing")
    return spec[key]


def _positive(name: str, value, strict: bool = True) -> float:
    if not isinstance(value, (int, float)) or (value <= 0 if strict else value < 0):
        raise ValueError(f"lengths.{name}: got {value!r}; allowed: a number {'>' if strict else '>='} 0")
    return float(value)


def read_length_file(path: str | Path, fmt: str = "auto") -> list[int]:
    """Lengths from a file: one integer per line, or a whitespace-tokenised text (one line = one sequence)."""
    if fmt not in ("auto", "lengths", "text"):
        raise ValueError(f"lengths.format: got {fmt!r}; allowed: 'auto', 'lengths', 'text'")
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"lengths.path: {str(path)!r} holds no non-empty line")
    if fmt == "auto":
        fmt = "lengths" if all(ln.strip().isdigit() for ln in lines) else "text"
    if fmt == "lengths":
        try:
            return [int(ln) for ln in lines]
        except ValueError as exc:
            raise ValueError(f"lengths.path: {str(path)!r} is not one integer per line ({exc})") from None
    return [len(ln.split()) for ln in lines]


def _draw(spec: dict, dist: str, n: int, rng: np.random.Generator, max_length: int) -> np.ndarray:
    if dist == "fixed":
        return np.full(n, int(spec.get("length") or max_length))
    if dist == "uniform":
        low, high = int(spec.get("low") or 1), int(spec.get("high") or max_length)
        if low > high:
            raise ValueError(f"lengths.low: got {low} > high {high}; allowed: low <= high")
        return rng.integers(low, high, size=n, endpoint=True)
    if dist == "normal":
        mean = _positive("mean", _need(spec, "mean", dist))
        std = _positive("std", _need(spec, "std", dist), strict=False)
        return np.rint(rng.normal(mean, std, size=n))
    if dist == "lognormal":
        sigma = _positive("sigma", _need(spec, "sigma", dist), strict=False)
        if spec.get("median") is not None and spec.get("mean") is not None:
            raise ValueError(f"lengths.median: got {spec['median']!r} together with mean {spec['mean']!r}; "
                             "allowed: one of median (tokens) or mean (of log length)")
        if spec.get("median") is not None:
            mu = np.log(_positive("median", spec["median"]))
        else:
            mu = float(_need(spec, "mean", dist))
        return np.rint(rng.lognormal(mu, sigma, size=n))
    if dist == "zipf":
        alpha = _positive("alpha", _need(spec, "alpha", dist))
        low, high = int(spec.get("low") or 1), int(spec.get("high") or max_length)
        high = min(high, max_length)
        if not 1 <= low <= high:
            raise ValueError(f"lengths.low: got {low} (high {high}); allowed: 1 <= low <= high")
        support = np.arange(low, high + 1)
        p = support.astype(np.float64) ** -alpha
        return rng.choice(support, size=n, p=p / p.sum())
    lengths = read_length_file(_need(spec, "path", dist), spec.get("format") or "auto")
    return np.resize(np.asarray(lengths), n)  # first n, cycled


def sample_lengths(spec: dict | None, n: int, seed: int, max_length: int) -> list[int]:
    """``n`` sequence lengths in ``[1, max_length]`` drawn from ``spec`` (None = all max_length)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: got {n!r}; allowed: an int >= 1")
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length: got {max_length!r}; allowed: an int >= 1")
    spec = dict(spec or {"distribution": "fixed"})
    dist = spec.pop("distribution", None)
    if dist not in PARAMS:
        raise ValueError(f"lengths.distribution: got {dist!r}; allowed: {', '.join(PARAMS)}")
    allowed = set(PARAMS[dist][0] + PARAMS[dist][1])
    unknown = {k for k, v in spec.items() if v is not None} - allowed
    if unknown:
        raise ValueError(
            f"lengths: parameter(s) {sorted(unknown)} not used by {dist!r}; allowed: {sorted(allowed)}"
        )
    raw = _draw(spec, dist, n, np.random.default_rng(seed), max_length)
    return [int(x) for x in np.clip(raw, 1, max_length)]
