"""Summary statistics of per-sample step times.

Input: a list of per-sample times in milliseconds (what ``harness.measure.timing`` returns).
Output: ``summarize(samples_ms)`` -> dict with the DESIGN.md metric names, all in ms except
``n_samples`` (count): ``latency_ms_p50, latency_ms_mean, latency_ms_std, latency_ms_iqr,
latency_ms_p10, latency_ms_p90, latency_ms_p99, latency_ms_p50_ci_low, latency_ms_p50_ci_high,
n_samples``.

Conventions (pinned by tests/test_stats.py with hand-computed values):
  * percentiles interpolate linearly between order statistics (numpy's default, "type 7");
  * ``std`` is the sample standard deviation (n - 1 in the denominator);
  * the 95% CI of the median is distribution-free: the order statistics ``x_(l)`` and
    ``x_(n+1-l)`` with the largest ``l`` such that ``P(B <= l-1) <= 2.5%`` for
    ``B ~ Binomial(n, 1/2)``; its coverage is at least 95%. Fewer than 6 samples give no
    interval (None), since even ``[min, max]`` covers the median with less than 95%.

``summarize_rounds(rounds_ms)``: the same metrics for a point measured in several worker
processes, with the headline and its CI from the round medians (see its docstring).

Never imports torch: runs on a CPU-only CI box.
"""
from __future__ import annotations

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


def binom_cdf_half(k: int, n: int) -> float:
    """``P(B <= k)`` for ``B ~ Binomial(n, 1/2)``, exact: integer counts over ``2**n`` (Python
    ints; floats overflow past n = 1023)."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(min(k, n) + 1)) / 2**n


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks ``(l, n+1-l)`` of the distribution-free CI of the median, or None: the
    largest ``l`` with ``P(B <= l - 1) <= (1 - confidence) / 2``, the binomial's CDF summed one
    term at a time in exact integers (one pass; 1 s at n = 100,000)."""
    alpha_half = (1.0 - confidence) / 2.0
    total, below, comb, best = 2**n, 0, 1, None  # comb = C(n, l - 1)
    for l in range(1, n // 2 + 1):
        below += comb  # sum of C(n, i) for i <= l - 1
        if below / total > alpha_half:
            break
        best = l
        comb = comb * (n - l + 1) // l
    return None if best is None else (best, n + 1 - best)


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


ROUND_METRICS = ("n_rounds", "latency_ms_round_p50s", "latency_ms_between_round_cv")


def t_quantile(q: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def summarize_rounds(rounds_ms: Sequence[Sequence[float]], confidence: float = 0.95) -> dict:
    """The latency metrics of a point measured in several worker processes (rounds).

    Model: a round's median is one draw of "the step's typical time in a fresh process" (its
    within-round noise included); rounds differ by between-process and between-minute drift.
    With R >= 2 rounds of samples:
      * ``latency_ms_p50`` is the MEAN of the R round medians;
      * its CI is Student's t interval over the round medians,
        ``mean ± t(1 - (1 - confidence)/2, R - 1) · s / sqrt(R)`` (``s``: their sample standard
        deviation), so drift between processes widens it and nothing pretends that samples
        of one process are independent draws of the next one's;
      * the spread metrics (mean, std, IQR, p10, p90, p99, n_samples) are of the pooled samples;
      * ``latency_ms_between_round_cv`` = s / mean of the round medians.
    With one round it is ``summarize`` (the median and its distribution-free CI), plus
    ``n_rounds`` = 1 and no between-round figure.
    """
    rounds = [list(r) for r in rounds_ms if r]
    pooled = [x for r in rounds for x in r]
    out = summarize(pooled)
    medians = [median(r) for r in rounds]
    out.update(n_rounds=len(rounds), latency_ms_round_p50s=medians,
               latency_ms_between_round_cv=None)
    if len(rounds) < 2:
        return out
    m, s = mean(medians), stdev(medians)
    half = t_quantile(1 - (1 - confidence) / 2, len(medians) - 1) * s / math.sqrt(len(medians))
    out.update(latency_ms_p50=m, latency_ms_p50_ci_low=max(m - half, 0.0),
               latency_ms_p50_ci_high=m + half,
               latency_ms_between_round_cv=s / m if m > 0 else None)
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
