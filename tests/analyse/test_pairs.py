"""The decision rule of paired comparisons (harness.records.pairs): hand-computed intervals and
verdicts, and the sequential rule's error rates checked by simulation."""
from __future__ import annotations

import math
import random

import pytest

from harness.records import pairs

T975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables: 4.303)
T975_DF3 = 3.182446305284263


def test_three_pairs_hand_computed():
    # log ratios 0.1, 0.2, 0.3: mean 0.2, sd 0.1, half width t(2) * 0.1 / sqrt(3)
    r = pairs.paired([0.1, 0.2, 0.3])
    half = T975_DF2 * 0.1 / math.sqrt(3)
    assert r.estimate == pytest.approx(math.exp(0.2))
    assert (r.low, r.high) == pytest.approx((math.exp(0.2 - half), math.exp(0.2 + half)))
    assert r.n == 3 and r.confidence == pytest.approx(0.95) and r.method == "paired"
    # [exp(-0.048), exp(0.448)] = [0.953, 1.565]: crosses 1.05 -> undecided
    assert r.verdict == "undecided"
    assert r.resolvable == pytest.approx(1.05 * math.exp(half) - 1)


@pytest.mark.parametrize("logs, verdict", [
    ([math.log(1.10) + e for e in (-0.01, 0.0, 0.01)], "slower"),   # [1.075, 1.126] > 1.05
    ([math.log(0.80) + e for e in (-0.01, 0.0, 0.01)], "faster"),   # below 1/1.05
    ([e for e in (-0.01, 0.0, 0.01)], "equal"),                     # [0.975, 1.025] inside
    ([math.log(1.05) + e for e in (-0.01, 0.0, 0.01)], "undecided"),  # straddles 1.05
])
def test_verdict_against_the_band(logs, verdict):
    assert pairs.paired(logs, resolution=0.05).verdict == verdict


def test_the_band_edges_and_a_missing_interval():
    assert pairs.verdict(1.0501, 1.2, 0.05) == "slower"
    assert pairs.verdict(1.0 / 1.05, 1.05, 0.05) == "equal"  # the band is closed
    assert pairs.verdict(0.5, 1.0 / 1.0501, 0.05) == "faster"
    assert pairs.verdict(None, None, 0.05) == "undecided"
    one = pairs.paired([0.3])
    assert one.estimate == pytest.approx(math.exp(0.3)) and one.low is None
    assert one.verdict == "undecided" and "too few" in one.verdict_text()
    assert pairs.paired([]).estimate is None


def test_a_sequential_look_spends_alpha_over_j_j_plus_1():
    assert [pairs.spent_alpha(0.05, j) for j in (None, 1, 2, 3)] == \
        pytest.approx([0.05, 0.025, 0.05 / 6, 0.05 / 12])
    assert sum(pairs.spent_alpha(0.05, j) for j in range(1, 10_000)) < 0.05
    logs = [0.1, 0.2, 0.3, 0.2]
    fixed, look2 = pairs.paired(logs), pairs.paired(logs, look=2)
    assert look2.confidence == pytest.approx(1 - 0.05 / 6) and look2.look == 2
    assert look2.high - look2.low > fixed.high - fixed.low  # wider: it is one look of several


def test_independent_is_welch_on_the_log_medians():
    base, cur = [10.0, 11.0, 12.0], [20.0, 22.0, 24.0, 26.0]
    r = pairs.independent(base, cur)
    lb, lc = [math.log(x) for x in base], [math.log(x) for x in cur]
    mb, mc = sum(lb) / 3, sum(lc) / 4
    vb = sum((x - mb) ** 2 for x in lb) / 2 / 3
    vc = sum((x - mc) ** 2 for x in lc) / 3 / 4
    df = (vb + vc) ** 2 / (vb ** 2 / 2 + vc ** 2 / 3)
    from scipy.stats import t

    half = t.ppf(0.975, df) * math.sqrt(vb + vc)
    assert r.estimate == pytest.approx(math.exp(mc - mb))
    assert (r.low, r.high) == pytest.approx((math.exp(mc - mb - half), math.exp(mc - mb + half)))
    assert r.method == "independent" and r.verdict == "slower" and r.n == 3
    assert pairs.independent([10.0], [12.0]).verdict == "undecided"  # one round: no spread


def test_block_pairs_pair_by_block_and_partner_and_leave_out_disturbed_blocks():
    def rnd(block, p50, partner=None, contended=False, status="ok"):
        r = {"block": block, "status": status, "latency_ms_p50": p50,
             "contention": {"contended": contended}}
        if partner:
            r["duet"] = {"partner": partner, "common_p50_ms": p50}
        return r

    a = [rnd(1, 11.0), rnd(2, 12.0), rnd(3, 50.0, contended=True), rnd(4, 10.0)]
    b = [rnd(1, 10.0), rnd(2, 10.0), rnd(3, 10.0), rnd(5, 10.0)]
    logs, left = pairs.block_pairs(a, b, "a", "b")
    assert logs == pytest.approx([math.log(1.1), math.log(1.2)]) and left == 1  # 3 out, 4/5 unpaired
    # a duet baseline measured beside two points in one block pairs with each its own
    base = [rnd(1, 10.0, partner="a"), rnd(1, 20.0, partner="c")]
    logs, _ = pairs.block_pairs([rnd(1, 15.0, partner="base")], base, "a", "base")
    assert logs == pytest.approx([math.log(1.5)])


def _error_rate(true_log: float, sd: float, trials: int, seed: int, min_pairs=3, max_pairs=40,
                outliers: float = 0.0):
    """Run the sequential rule as ``measure.rounds: auto`` does: a look after every pair from
    ``min_pairs`` on, stop at the first decision; how often the interval it stopped on (or the
    last one) misses the true ratio, and how often it named the wrong direction."""
    rng = random.Random(seed)
    missed = wrong = 0

    def draw() -> float:  # a share ``outliers`` of pairs five times noisier: a disturbed pair
        return rng.gauss(true_log, sd if rng.random() >= outliers else 5 * sd)

    for _ in range(trials):
        x = [draw() for _ in range(min_pairs - 1)]
        for look in range(1, max_pairs - min_pairs + 2):
            x.append(draw())
            r = pairs.paired(x, 0.05, 0.95, look)
            if r.decided:
                break
        missed += not (math.log(r.low) <= true_log <= math.log(r.high))
        truth = pairs.verdict(math.exp(true_log), math.exp(true_log), 0.05)
        wrong += r.decided and truth != "undecided" and r.verdict != truth
    return missed / trials, wrong / trials


@pytest.mark.parametrize("true_ratio, outliers", [(1.0, 0.0), (1.10, 0.0), (0.85, 0.0),
                                                  (1.0, 0.1), (1.10, 0.2)])
def test_the_sequential_rule_keeps_its_error_rate(true_ratio, outliers):
    """Stopping at the first decided look keeps the chance that the final interval misses the
    truth below 5% (the union bound over looks), and a decided verdict is almost never wrong --
    also when a share of the pairs is five times noisier (heavier tails than the t assumes)."""
    missed, wrong = _error_rate(math.log(true_ratio), sd=0.05, trials=2000, seed=7,
                                outliers=outliers)
    assert missed <= 0.05  # the claim: at most 1 - confidence
    assert wrong <= 0.01


def test_without_the_spending_rule_peeking_would_break_the_claim():
    """Peeking with a plain 95% interval at every look instead: the chance that some look's
    interval misses the truth (A/A) climbs well past 5% -- why each look spends
    alpha / (j (j + 1))."""
    rng = random.Random(3)
    missed = 0
    trials = 2000
    for _ in range(trials):
        x = [rng.gauss(0.0, 0.05) for _ in range(2)]
        for _look in range(38):
            x.append(rng.gauss(0.0, 0.05))
            r = pairs.paired(x, 0.05, 0.95, None)
            if not (r.low <= 1.0 <= r.high):
                missed += 1
                break
    assert missed / trials > 0.05
