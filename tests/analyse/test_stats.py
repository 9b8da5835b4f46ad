"""harness.records.stats against hand-computed values (pytest-benchmark's stats tests are the model)."""
import math

import pytest

from harness.records import stats

TEN = [float(x) for x in range(1, 11)]  # 1..10


def test_percentiles_interpolate_linearly():
    # position (n - 1) * q / 100 over the sorted values 1..10
    assert stats.percentile(TEN, 50) == pytest.approx(5.5)
    assert stats.percentile(TEN, 10) == pytest.approx(1.9)  # pos 0.9
    assert stats.percentile(TEN, 90) == pytest.approx(9.1)  # pos 8.1
    assert stats.percentile(TEN, 99) == pytest.approx(9.91)  # pos 8.91
    assert stats.percentile(TEN, 0) == 1.0 and stats.percentile(TEN, 100) == 10.0
    assert stats.percentile([7.0], 37) == 7.0


def test_order_does_not_matter():
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_mean_std_iqr():
    assert stats.mean(TEN) == 5.5
    # sum of squared deviations from 5.5 is 82.5; sample std divides by n - 1 = 9
    assert stats.stdev(TEN) == pytest.approx(math.sqrt(82.5 / 9))
    assert stats.stdev([2.0]) == 0.0
    # p25 = 3.25 (pos 2.25), p75 = 7.75 (pos 6.75)
    assert stats.iqr(TEN) == pytest.approx(4.5)


def exact_cdf_half(k: int, n: int) -> float:
    """P(B <= k), B ~ Binomial(n, 1/2), in exact integers: the check on scipy's quantile."""
    import math

    return sum(math.comb(n, i) for i in range(max(k + 1, 0))) / 2**n


@pytest.mark.parametrize("n, ranks", [
    (5, None),  # P(B <= 0) = 1/32 = 3.1% > 2.5%: even [min, max] covers < 95%
    (6, (1, 6)),  # 1/64 = 1.6%
    (10, (2, 9)),  # P(B <= 1) = 11/1024 = 1.07%, P(B <= 2) = 5.5%
    (20, (6, 15)),  # P(B <= 5) = 21700/2^20 = 2.07%, P(B <= 6) = 5.8%
])
def test_median_ci_ranks(n, ranks):
    assert stats.median_ci_ranks(n) == ranks


@pytest.mark.parametrize("n", [1024, 1025, 5000])
def test_median_ci_of_many_samples_is_exact_and_does_not_overflow(n):
    """Past 1023 samples 2.0 ** n overflows a float: a fast step on a quiet machine reached it.
    The ranks are the defining ones (P(B <= l - 1) <= 2.5% < P(B <= l)), near the normal
    approximation n/2 -+ 1.96 sqrt(n) / 2."""
    low, high = stats.median_ci_ranks(n)
    assert exact_cdf_half(low - 1, n) <= 0.025 < exact_cdf_half(low, n)
    assert high == n + 1 - low and abs(low - (n / 2 - 1.96 * n ** 0.5 / 2)) <= 2
    samples = [float(i % 97) for i in range(n)]
    assert stats.summarize(samples)["latency_ms_p50_ci_low"] is not None


def test_median_ci_values_are_order_statistics():
    values = [10.0, 3.0, 7.0, 1.0, 9.0, 2.0, 8.0, 4.0, 6.0, 5.0]  # 1..10 shuffled
    assert stats.median_ci(values) == (2.0, 9.0)
    assert stats.median_ci([1.0, 2.0, 3.0]) == (None, None)


def test_summarize_names_and_values():
    out = stats.summarize(TEN)
    assert set(out) == set(stats.LATENCY_METRICS)
    assert out["latency_ms_p50"] == pytest.approx(5.5)
    assert out["latency_ms_p50_ci_low"] == 2.0 and out["latency_ms_p50_ci_high"] == 9.0
    assert out["latency_ms_iqr"] == pytest.approx(4.5)
    assert out["n_samples"] == 10
    empty = stats.summarize([])
    assert empty["n_samples"] == 0 and empty["latency_ms_p50"] is None


def test_noise_warning_follows_iqr_over_median():
    assert stats.noise_warning([10.0] * 10) is None
    # IQR 4.5 over median 5.5 = 82%
    assert "IQR/median = 81.8%" in stats.noise_warning(TEN)
