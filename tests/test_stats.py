"""The ablation statistics: intervals against scipy's own, each verdict on constructed inputs, the seeds needed."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from alexnet_lab.stats import Interval, compare, paired_interval, seeds_needed, verdict, welch_interval

VARIANT = [21.3, 22.9, 20.4, 23.8, 21.7]
BASELINE = [20.1, 21.0, 20.2, 22.1, 20.3]


def test_paired_interval_equals_scipys_paired_t() -> None:
    got = paired_interval(VARIANT, BASELINE)
    want = stats.ttest_rel(VARIANT, BASELINE).confidence_interval(0.95)
    assert (got.low, got.high) == (pytest.approx(want.low, abs=1e-12), pytest.approx(want.high, abs=1e-12))
    assert got.method == "paired t" and got.n == 5
    assert got.estimate == pytest.approx(sum(VARIANT) / 5 - sum(BASELINE) / 5)


def test_welch_interval_equals_scipys_welch_t() -> None:
    got = welch_interval(VARIANT, BASELINE[:3])
    want = stats.ttest_ind(VARIANT, BASELINE[:3], equal_var=False).confidence_interval(0.95)
    assert (got.low, got.high) == (pytest.approx(want.low, abs=1e-12), pytest.approx(want.high, abs=1e-12))
    assert got.method == "Welch t" and got.n == 3


def test_compare_pairs_runs_by_seed_when_both_sides_ran_the_same_seeds() -> None:
    paired = compare(dict(zip([3, 1, 2, 5, 4], VARIANT)), dict(zip([3, 1, 2, 5, 4], BASELINE)))
    assert paired.method == "paired t" and paired == paired_interval(VARIANT, BASELINE)
    shuffled = compare(dict(zip([1, 2, 3, 4, 5], VARIANT)), dict(zip([5, 4, 3, 2, 1], BASELINE)))
    assert shuffled.estimate == pytest.approx(paired.estimate) and shuffled.low != pytest.approx(paired.low)
    other_seeds = compare(dict(zip(range(5), VARIANT)), dict(zip(range(10, 15), BASELINE)))
    assert other_seeds.method == "Welch t"
    single = compare({1: 20.0}, {1: 19.0})
    assert single.method == "one run a side" and math.isnan(single.low)


def interval(low: float, high: float, spread: float = 1.0) -> Interval:
    return Interval((low + high) / 2, low, high, "paired t", 3, (spread,))


@pytest.mark.parametrize(
    "low, high, label",
    [
        (0.4, 1.6, "agrees"),  # excludes 0, holds the claim 1.0
        (0.1, 0.6, "smaller"),  # excludes both, between them
        (1.5, 3.0, "larger"),  # excludes both, beyond the claim
        (-2.0, -0.5, "opposite"),  # excludes 0, on the other side
        (-0.3, 0.4, "no effect"),  # holds 0, excludes the claim
        (-0.8, 2.0, "inconclusive"),  # holds both
    ],
)
def test_each_verdict(low: float, high: float, label: str) -> None:
    assert verdict(interval(low, high), claim=1.0).label == label


def test_verdicts_on_a_log_ratio_scale() -> None:
    claim = math.log(6.0)
    assert verdict(interval(math.log(4.0), math.log(9.0)), claim).label == "agrees"
    assert verdict(interval(math.log(1.5), math.log(2.5)), claim).label == "smaller"
    assert verdict(interval(math.log(0.8), math.log(1.2)), claim).label == "no effect"


def test_inconclusive_says_how_many_seeds_would_decide() -> None:
    wide = paired_interval([21.0, 23.5, 19.8], [20.0, 20.5, 21.1])
    result = verdict(wide, 1.0)
    n = seeds_needed(wide, 1.0)
    assert result.label == "inconclusive" and f"about {n} seeds per variant" in result.sentence
    sd = wide.spreads[0]

    def half(k: int) -> float:
        return stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k)

    assert half(n) < 0.5 <= half(n - 1)  # the first n whose half-width is under half the claim
    welch = welch_interval([21.0, 23.5, 19.8], [20.0, 20.5, 21.1])
    m = seeds_needed(welch, 1.0)
    va = welch.spreads[0] ** 2 / m + welch.spreads[1] ** 2 / m
    df = va**2 / ((welch.spreads[0] ** 4 + welch.spreads[1] ** 4) / m**2 / (m - 1))
    assert stats.t.ppf(0.975, df) * math.sqrt(va) < 0.5
    assert seeds_needed(compare({1: 20.0}, {1: 19.0}), 1.0) is None  # no spread to go by
