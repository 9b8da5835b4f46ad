"""Summary statistics of per-sample step times.

Input: a list of per-sample times in milliseconds (what ``harness.measure.timing`` returns).
Output: ``summarize(samples_ms)`` -> dict with the DESIGN.md metric names, all in ms except
``n_samples`` (count): ``latency_ms_p50, latency_ms_mean, latency_ms_std, latency_ms_iqr,
latency_ms_p10, latency_ms_p90, latency_ms_p99, latency_ms_p50_ci_low, latency_ms_p50_ci_high,
n_samples``.

Conventions (pinned by tests/analyse/test_stats.py with hand-computed values):
  * percentiles interpolate linearly between order statistics (numpy's default, "type 7");
  * ``std`` is the sample standard deviation (n - 1 in the denominator);
  * the 95% CI of the median is distribution-free: the order statistics ``x_(l)`` and
    ``x_(n+1-l)`` with the largest ``l`` such that ``P(B <= l-1) <= 2.5%`` for
    ``B ~ Binomial(n, 1/2)``; its coverage is at least 95%. Fewer than 6 samples give no
    interval (None), since even ``[min, max]`` covers the median with less than 95%.

``summarize_rounds(rounds_ms)``: the same metrics for a point measured in several worker
processes, with the headline and its CI from the round medians on the log scale (see its
docstring); ``log_interval(values)``: the geometric mean and its t interval on the logs.

Never imports torch: runs on a CPU-only CI box.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

LATENCY_METRICS = (
    "latency_ms_p50",
    "latency_ms_mean",
    "latency_ms_std",
    "latency_ms_iqr",
    "latency_ms_p10",
    "latency_ms_p90",
    "latency_ms_p99",
    "latency_ms_p50_ci_low",
    "latency_ms_p50_ci_high",
    "n_samples",
)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between order statistics."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q={q} must lie in [0, 100]")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def stdev(values: Sequence[float]) -> float:
    """Sample standard deviation; 0.0 for a single value."""
    n = len(values)
    if n < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((x - m) ** 2 for x in values) / (n - 1))


def iqr(values: Sequence[float]) -> float:
    return percentile(values, 75) - percentile(values, 25)


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks ``(l, n+1-l)`` of the distribution-free CI of the median, or None: the
    largest ``l`` with ``P(B <= l - 1) <= (1 - confidence) / 2``, ``B ~ Binomial(n, 1/2)``
    (scipy's binomial quantile, then its CDF to step down where the quantile overshoots)."""
    from scipy.stats import binom

    if n < 1:
        return None
    alpha_half = (1.0 - confidence) / 2.0
    k = int(binom.ppf(alpha_half, n, 0.5))  # the smallest k with P(B <= k) >= alpha/2
    if binom.cdf(k, n, 0.5) > alpha_half * (1 + 1e-12):
        k -= 1
    return None if k < 0 else (k + 1, n - k)


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None]:
    """``(low, high)`` of the CI of the median; ``(None, None)`` when n is too small."""
    ranks = median_ci_ranks(len(values), confidence)
    if ranks is None:
        return None, None
    xs = sorted(values)
    return xs[ranks[0] - 1], xs[ranks[1] - 1]


def summarize(samples_ms: Sequence[float]) -> dict[str, float | int | None]:
    """Every latency metric of DESIGN.md from per-sample times in ms (empty -> all None)."""
    if not samples_ms:
        out: dict[str, float | int | None] = dict.fromkeys(LATENCY_METRICS)
        out["n_samples"] = 0
        return out
    low, high = median_ci(samples_ms)
    return {
        "latency_ms_p50": median(samples_ms),
        "latency_ms_mean": mean(samples_ms),
        "latency_ms_std": stdev(samples_ms),
        "latency_ms_iqr": iqr(samples_ms),
        "latency_ms_p10": percentile(samples_ms, 10),
        "latency_ms_p90": percentile(samples_ms, 90),
        "latency_ms_p99": percentile(samples_ms, 99),
        "latency_ms_p50_ci_low": low,
        "latency_ms_p50_ci_high": high,
        "n_samples": len(samples_ms),
    }


@functools.lru_cache(maxsize=4096)
def t_quantile(q: float, df: int) -> float:
    """Student's t quantile (scipy), cached: the sequential looks ask the same few (q, df) again
    and again, and one scipy call costs ~100 us."""
    from scipy.stats import t

    return float(t.ppf(q, df))


def log_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(geometric mean, low, high): Student's t interval of the mean of ``log(values)``, taken
    back with ``exp`` -- positive whatever the spread (2 or more values)."""
    logs = [math.log(v) for v in values]
    m, s = mean(logs), stdev(logs)
    half = t_quantile(1 - (1 - confidence) / 2, len(logs) - 1) * s / math.sqrt(len(logs))
    return math.exp(m), math.exp(m - half), math.exp(m + half)


def summarize_rounds(rounds_ms: Sequence[Sequence[float]], confidence: float = 0.95,
                     excluded: Sequence[bool] | None = None) -> dict:
    """The latency metrics of a point measured in several worker processes (rounds).

    Model: a round's median is one draw of "the step's typical time in a fresh process" (its
    within-round noise included); rounds differ by between-process and between-minute drift,
    and noise on a shared machine only adds time and scales it: it is multiplicative. So, with
    R >= 2 kept rounds:
      * ``latency_ms_p50`` is the GEOMETRIC mean of the kept round medians (the mean of their
        logarithms, taken back): one round r times slower moves it by r ** (1/R), its share of
        the log, where an arithmetic mean would move by (r - 1) / R of the whole;
      * its CI is Student's t interval on the logarithms, ``exp(mean ± t(1 - (1 - c)/2, R - 1)
        · s / sqrt(R))`` (``s``: the sample standard deviation of the log medians): never
        <= 0, asymmetric as a ratio should be, and drift between processes widens it;
      * ``excluded`` marks rounds kept out of the headline (measured on a disturbed machine,
        with at least two clean rounds left): ``latency_ms_rounds_excluded`` counts them, and
        they stay in the record's rounds and in the pooled samples;
      * the spread metrics (mean, std, IQR, p10, p90, p99, n_samples) are of the pooled samples;
      * ``latency_ms_between_round_cv`` = the standard deviation of the log medians (for a
        small spread, the coefficient of variation of the medians).
    With one kept round it is ``summarize`` of that round's samples (the median and its
    distribution-free CI), plus ``n_rounds`` and no between-round figure.
    """
    rounds = [list(r) for r in rounds_ms if r]
    skip = list(excluded or [False] * len(rounds_ms))
    skip = [x for x, r in zip(skip, rounds_ms) if r]
    kept = [r for r, x in zip(rounds, skip) if not x]
    if len(kept) < 2:  # too few clean rounds: every round counts
        kept, skip = rounds, [False] * len(rounds)
    pooled = [x for r in rounds for x in r]
    out = summarize(pooled)
    medians = [median(r) for r in rounds]
    out.update(n_rounds=len(rounds), latency_ms_round_p50s=medians,
               latency_ms_between_round_cv=None, latency_ms_rounds_excluded=sum(skip))
    if len(kept) < 2:
        out.update({k: v for k, v in summarize(kept[0] if kept else []).items()
                    if k in ("latency_ms_p50", "latency_ms_p50_ci_low", "latency_ms_p50_ci_high")})
        return out
    geo, low, high = log_interval([median(r) for r in kept], confidence)
    out.update(latency_ms_p50=geo, latency_ms_p50_ci_low=low, latency_ms_p50_ci_high=high,
               latency_ms_between_round_cv=stdev([math.log(median(r)) for r in kept]))
    return out


def noise_warning(samples_ms: Sequence[float], threshold: float = 0.10) -> str | None:
    """torch.utils.benchmark's rule: warn when IQR / median >= 10%."""
    if len(samples_ms) < 4:
        return None
    med = median(samples_ms)
    if med <= 0:
        return None
    ratio = iqr(samples_ms) / med
    if ratio >= threshold:
        return f"noisy measurement: IQR/median = {ratio:.1%} (>= {threshold:.0%})"
    return None
