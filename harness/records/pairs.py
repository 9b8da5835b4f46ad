"""Comparisons that decide: the ratio of two step times from pairs measured close together.

    paired(log_ratios, resolution=0.05, confidence=0.95, look=None) -> Ratio
    independent(base_medians, current_medians, ...) -> Ratio     (separately measured runs)
    verdict(low, high, resolution) -> faster | slower | equal | undecided
    block_pairs(current_rounds, base_rounds) -> (log ratios, pairs left out)

Model. A pair is one measurement of each side taken close together in time -- consecutive
workers of one block in random order (interleaved), or two workers sampling at the same time on
disjoint cores (duet) -- so what disturbs the machine over minutes hits both alike and cancels in
their ratio. Timing noise is multiplicative, so pairs are compared on the log scale: pair i
gives ``x_i = log(current_i / base_i)`` (current_i, base_i: the round medians, over the common
sampling window for a duet). The ratio is ``exp(mean x)`` (a geometric mean of the pair
ratios) and its confidence interval is Student's t on the ``x_i``:

    exp(mean(x) ± t(1 - a/2, n - 1) · sd(x) / sqrt(n))

-- never <= 0, whatever the noise. A ratio is *decided* against the resolution ``d`` (a
suite's ``compare.resolution``, 5% by default), the band being ``[1/(1+d), 1+d]``:
  * ``slower``: the whole interval above ``1 + d``; ``faster``: the whole interval below
    ``1/(1 + d)`` (the difference is larger than the resolution, in that direction);
  * ``equal``: the whole interval inside the band: equal within ``d``, an answer of its own;
  * ``undecided``: the interval crosses an edge of the band; ``Ratio.resolvable`` is then the
    smallest difference this interval could have decided: ``(1 + d) · exp(h) - 1`` for a
    log half-width ``h`` (a true difference at least that large would read slower/faster).
Sequential testing (``measure.rounds: auto``: pairs are added until every comparison is
decided): the run looks at the interval after each new pair, and look ``j`` (1, 2, ...) uses
``a_j = a / (j (j + 1))``. These sum to ``a`` over any number of looks, so by the union bound
the chance that ANY interval of the sequence misses the true ratio -- and so that the verdict
at which the run stopped is wrong -- is at most ``a = 1 - confidence``, per comparison, whenever
it stops. A fixed number of pairs is one look, at ``a``. ``tests/records/test_pairs.py``
checks both error rates by simulation.
Two runs measured apart (``tbench compare RUN RUN``) have no pairs: ``independent`` is Welch's
t interval on the difference of the mean log round medians, decided the same way (it needs
far more rounds to decide than pairs do). No torch; scipy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from harness.records.stats import mean, stdev, t_quantile

VERDICTS = ("faster", "slower", "equal", "undecided")
RESOLUTION = 0.05
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Ratio:
    """current / base step time, its interval and what it decides."""

    estimate: float | None  # geometric mean of the pair ratios (None: no pair)
    low: float | None
    high: float | None
    n: int  # pairs (or rounds per side, ``independent``)
    confidence: float  # the interval's own level (1 - a_j at a sequential look)
    verdict: str
    resolution: float
    resolvable: float | None  # the smallest difference this interval could decide (fraction)
    look: int | None = None  # the sequential look it was taken at (None: a fixed count)
    method: str = "paired"  # paired | independent

    @property
    def decided(self) -> bool:
        return self.verdict != "undecided"

    def interval_text(self) -> str:
        """``×0.62 [0.60, 0.65]``: the ratio and its interval."""
        if self.estimate is None:
            return "—"
        ci = f" [{self.low:.3g}, {self.high:.3g}]" if self.low is not None else ""
        return f"×{self.estimate:.3g}{ci}"

    def verdict_text(self) -> str:
        """``faster`` / ``equal within 5%`` / ``undecided (resolves differences ≥ 12%)``."""
        if self.verdict == "equal":
            return f"equal within {self.resolution:.0%}"
        if self.verdict == "undecided":
            if self.resolvable is None:
                what = "pair(s)" if self.method == "paired" else "round(s) a side"
                return f"undecided ({self.n} {what}: too few for an interval)"
            return f"undecided (resolves differences ≥ {self.resolvable:.0%})"
        return self.verdict

    def text(self) -> str:
        """``×0.62 [0.60, 0.65] faster``."""
        return f"{self.interval_text()} {self.verdict_text()}"


def spent_alpha(alpha: float, look: int | None) -> float:
    """The error a look may spend: ``alpha`` for a fixed count, ``alpha / (j (j + 1))`` at look j."""
    return alpha if look is None else alpha / (look * (look + 1))


def verdict(low: float | None, high: float | None, resolution: float) -> str:
    if low is None or high is None:
        return "undecided"
    top, bottom = 1.0 + resolution, 1.0 / (1.0 + resolution)
    if low > top:
        return "slower"
    if high < bottom:
        return "faster"
    if bottom <= low and high <= top:
        return "equal"
    return "undecided"


def _ratio(center: float, half: float | None, n: int, level: float, resolution: float,
           look: int | None, method: str) -> Ratio:
    if half is None:
        return Ratio(math.exp(center), None, None, n, level, "undecided", resolution, None, look,
                     method)
    low, high = math.exp(center - half), math.exp(center + half)
    resolvable = (1.0 + resolution) * math.exp(half) - 1.0
    return Ratio(math.exp(center), low, high, n, level, verdict(low, high, resolution),
                 resolution, resolvable, look, method)


def paired(log_ratios: Sequence[float], resolution: float = RESOLUTION,
           confidence: float = CONFIDENCE, look: int | None = None) -> Ratio:
    """The ratio of ``n`` pairs (see the module docstring); fewer than 2 pairs: undecided."""
    x = [float(v) for v in log_ratios]
    alpha = spent_alpha(1.0 - confidence, look)
    if not x:
        return Ratio(None, None, None, 0, 1 - alpha, "undecided", resolution, None, look)
    half = None
    if len(x) >= 2:
        half = t_quantile(1 - alpha / 2, len(x) - 1) * stdev(x) / math.sqrt(len(x))
    return _ratio(mean(x), half, len(x), 1 - alpha, resolution, look, "paired")


def independent(base_medians: Sequence[float], current_medians: Sequence[float],
                resolution: float = RESOLUTION, confidence: float = CONFIDENCE) -> Ratio:
    """current / base from two separately measured sets of round medians: Welch's t interval on
    the difference of their mean logarithms (Welch-Satterthwaite degrees of freedom)."""
    lb = [math.log(v) for v in base_medians]
    lc = [math.log(v) for v in current_medians]
    n = min(len(lb), len(lc))
    if n == 0:
        return Ratio(None, None, None, 0, confidence, "undecided", resolution, None,
                     method="independent")
    center = mean(lc) - mean(lb)
    if n < 2:
        return _ratio(center, None, n, confidence, resolution, None, "independent")
    vb, vc = stdev(lb) ** 2 / len(lb), stdev(lc) ** 2 / len(lc)
    se = math.sqrt(vb + vc)
    if se == 0:
        return _ratio(center, 0.0, n, confidence, resolution, None, "independent")
    df = (vb + vc) ** 2 / (vb ** 2 / (len(lb) - 1) + vc ** 2 / (len(lc) - 1))
    half = t_quantile(1 - (1 - confidence) / 2, max(df, 1.0)) * se
    return _ratio(center, half, n, confidence, resolution, None, "independent")


def block_log_ratios(current_rounds: Sequence[dict], base_rounds: Sequence[dict],
                     current_id: str, base_id: str) -> tuple[dict[int, float], int]:
    """block -> ``log(current / base)`` of two points' rounds measured in the same block (the
    record's ``rounds`` entries: ``block``, ``status``, ``latency_ms_p50``; a duet round's
    ``duet``: ``partner`` and ``common_p50_ms``, its median over the window both sides sampled:
    a point measured in several duets of one block pairs with each partner's own), and how many
    pairs were left out because a side was measured on a disturbed machine -- while at least
    two clean pairs remain; a block either side lacks or failed is no pair."""
    def by_block(rounds, partner):
        out = {}
        for r in rounds:
            duet = r.get("duet") or {}
            if r.get("status") != "ok" or r.get("block") is None:
                continue
            if duet and duet.get("partner") != partner:
                continue  # the same block's duet with another point
            out[r["block"]] = r  # a retried round replaces the one before it
        return out

    cur, base = by_block(current_rounds, base_id), by_block(base_rounds, current_id)
    found: dict[int, tuple[float, bool]] = {}
    for b in sorted(set(cur) & set(base)):
        c, a = _median(cur[b]), _median(base[b])
        if c and a:
            found[b] = (math.log(c / a), _disturbed(cur[b]) or _disturbed(base[b]))
    clean = {b: x for b, (x, bad) in found.items() if not bad}
    if len(clean) >= 2:
        return clean, len(found) - len(clean)
    return {b: x for b, (x, _) in found.items()}, 0


def block_pairs(current_rounds: Sequence[dict], base_rounds: Sequence[dict], current_id: str,
                base_id: str) -> tuple[list[float], int]:
    """``block_log_ratios`` as a list in block order, and the pairs left out."""
    logs, left = block_log_ratios(current_rounds, base_rounds, current_id, base_id)
    return [logs[b] for b in sorted(logs)], left


def _median(rec: dict) -> float | None:
    """The round's median, over the common window when it ran as one side of a duet."""
    return (rec.get("duet") or {}).get("common_p50_ms") or rec.get("latency_ms_p50")


def _disturbed(rec: dict) -> bool:
    return bool((rec.get("contention") or {}).get("contended"))
