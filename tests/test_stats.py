"""The ablation statistics: intervals against scipy's own, never narrower than the measurement's resolution, open
where runs are censored; each verdict against a claim's band on constructed inputs; the seeds needed."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats

from alexnet_lab.stats import Claim, Interval, compare, paired_interval, seeds_needed, verdict, welch_interval

VARIANT = [21.3, 22.9, 20.4, 23.8, 21.7]
BASELINE = [20.1, 21.0, 20.2, 22.1, 20.3]
ONE_POINT = Claim("cifar10", "top1", 1.0, 0.25, "test")  # band [0.75, 1.25]


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


@pytest.mark.parametrize("paired", [True, False])
def test_quantised_ties_get_the_resolution_not_a_zero_width_interval(paired: bool) -> None:
    """Three seeds that each measured the same quantised values (a milestone crossed in the same window): the spread
    is zero, and the interval is the resolution, reported as standing in for it."""
    seeds = [1, 2, 3] if paired else [4, 5, 6]
    got = compare({1: 7.2, 2: 7.2, 3: 7.2}, dict.fromkeys(seeds, 1.0), resolution=(0.22, 0.22))
    assert got.spreads == ((0.0,) if paired else (0.0, 0.0))
    assert (got.low, got.high) == (pytest.approx(6.2 - 0.22), pytest.approx(6.2 + 0.22))
    assert "zero spread" in got.notes[0] and "stands in" in got.notes[0]
    # without a known resolution it would be a point, a confident verdict from quantisation alone: undecided instead
    unknown = compare({1: 7.2, 2: 7.2}, {1: 1.0, 2: 1.0})
    assert not unknown.decided and "resolution unknown" in unknown.notes[0]
    assert verdict(unknown, ONE_POINT).label == "inconclusive" and "resolution is not recorded" in verdict(
        unknown, ONE_POINT).sentence  # fmt: skip


def test_a_wide_interval_is_not_narrowed_by_the_resolution() -> None:
    got = compare(dict(zip(range(5), VARIANT)), dict(zip(range(5), BASELINE)), resolution=(0.01, 0.01))
    assert (got.low, got.high) == (paired_interval(VARIANT, BASELINE).low, paired_interval(VARIANT, BASELINE).high)
    assert got.notes == ()


def test_censored_runs_leave_no_interval_and_no_verdict() -> None:
    """A run that never reached the milestone is only a lower bound, and as its value grows the t interval's near end
    moves away too (the mean and the spread grow together): no end of it bounds anything. Variant log-ratios 3.4,
    3.5 and a censored 3.55: filled in at 3.55 the t interval is [3.33, 3.97]; at 10, [-4.9, 16.5]."""
    v, b = {1: 3.4, 2: 3.5, 3: 3.55}, {1: 1.6, 2: 1.5, 3: 1.7}
    at_cap, later = compare(v, b), compare({**v, 3: 10.0}, b)
    assert later.low < at_cap.low - 5  # a longer run would have moved the "lower bound" down, not up
    for censored, side in (((True, False), "variant"), ((False, True), "baseline"), ((True, True), "both")):
        got = compare(v, b, censored=censored)
        assert (got.low, got.high, got.censored) == (-math.inf, math.inf, side)
        result = verdict(got, Claim("cifar10", "speedup", 6.0, 1.0, "Figure 1"))
        assert result.label == "inconclusive" and "raise trainer.max_epochs" in result.sentence
        assert seeds_needed(got, 1.0) is None  # more seeds cannot close it


def interval(low: float, high: float, spread: float = 1.0) -> Interval:
    return Interval((low + high) / 2, low, high, "paired t", 3, (spread,))


@pytest.mark.parametrize(
    "low, high, label",
    [
        (0.4, 1.6, "agrees"),  # excludes 0, meets the band [0.75, 1.25]
        (0.8, 1.2, "agrees"),  # inside the band
        (0.1, 0.6, "smaller"),  # excludes 0, short of the band
        (1.5, 3.0, "larger"),  # beyond the band
        (-2.0, -0.5, "opposite"),  # excludes 0, on the other side
        (-0.3, 0.4, "no effect"),  # holds 0, misses the band
        (-0.8, 2.0, "inconclusive"),  # holds 0 and meets the band
    ],
)
def test_each_verdict_against_the_claims_band(low: float, high: float, label: str) -> None:
    assert verdict(interval(low, high), ONE_POINT).label == label


def test_a_band_that_straddles_no_effect_is_met_before_anything_is_called_opposite() -> None:
    straddling = Claim("cifar10", "top1", 0.5, 1.0, "a rough figure")  # band [-0.5, 1.5]
    assert verdict(interval(-0.4, -0.1), straddling).label == "agrees"
    assert verdict(interval(-3.0, -2.0), straddling).label == "opposite"


def test_a_claim_inside_or_outside_its_band() -> None:
    """A rounded figure is a band, not a point: 0.6 [0.55, 0.65] misses 1.0 ± 0.25 but meets 1.0 ± 0.5."""
    measured = interval(0.55, 0.65)
    assert verdict(measured, ONE_POINT).label == "smaller"
    assert verdict(measured, Claim("cifar10", "top1", 1.0, 0.5, "whole percents")).label == "agrees"


def test_verdicts_on_a_log_ratio_scale() -> None:
    six = Claim("cifar10", "speedup", 6.0, 1.0, "paper, Figure 1")  # 5x to 7x
    assert six.band == (pytest.approx(math.log(5.0)), pytest.approx(math.log(7.0)))
    assert verdict(interval(math.log(4.0), math.log(9.0)), six).label == "agrees"
    assert verdict(interval(math.log(5.5), math.log(5.9)), six).label == "agrees"  # 5.85x is inside 6 +- 1
    assert verdict(interval(math.log(1.5), math.log(2.5)), six).label == "smaller"
    assert verdict(interval(math.log(0.8), math.log(1.2)), six).label == "no effect"
    assert verdict(interval(math.log(7.5), math.log(9.0)), six).label == "larger"


def test_a_band_that_reaches_no_effect_cannot_be_told_from_none() -> None:
    coarse = Claim("cifar10", "top1", 1.0, 1.0, "whole percents")  # 18 % vs 19 %: 0 to 2 points
    result = verdict(interval(-0.2, 0.3), coarse)
    assert result.label == "inconclusive" and "reaches no effect" in result.sentence
    assert verdict(interval(0.2, 0.6), coarse).label == "agrees"
    assert verdict(interval(2.2, 3.0), coarse).label == "larger"


def exact_power(effect: float, sd: float, ks: np.ndarray) -> np.ndarray:
    """A paired t test's chance of rejecting no effect on the effect's side, exactly (noncentral t)."""
    se = sd / np.sqrt(ks)
    return stats.nct.sf(stats.t.ppf(0.975, ks - 1), ks - 1, effect / se)


def test_a_band_that_reaches_no_effect_says_how_many_seeds_would_exclude_it() -> None:
    """The LRN sweep's first two pairs (no LRN - 18pct, test top-1): at their spread, the seeds per variant that give
    an 80 % chance of an interval excluding no effect if the effect is the claim's +1 point or the measured +0.05,
    the chance the two pairs had, and the seeds needed if the spread is at its 80 % upper confidence bound (one
    degree of freedom): checked against the exact power of a paired t test."""
    coarse = Claim("cifar10", "top1", 1.0, 1.0, "whole percents")
    measured = paired_interval([19.43, 20.23], [19.83, 19.73])
    sd = statistics.stdev([19.43 - 19.83, 20.23 - 19.73])
    ks = np.arange(2, 3000)
    upper = sd * math.sqrt(1 / stats.chi2.ppf(0.2, 1))

    def first(effect: float, spread: float) -> int:
        return int(ks[np.flatnonzero(exact_power(effect, spread, ks) >= 0.8)[0]])

    assert (first(1.0, sd), first(1.0, upper), first(0.05, sd)) == (6, 52, 1274)
    assert round(float(exact_power(1.0, sd, np.array([2]))[0]) * 100) == 14
    assert verdict(measured, coarse).sentence.endswith(
        "at the observed spread (sd of the paired differences 0.64, from 2 pairs), seeds per variant for an 80 % "
        "chance of an interval that excludes no effect: about 6 if the effect is the claim's +1.00 points (the 2 so "
        "far: 14 %), 52 if the spread is at its 80 % upper bound; about 1,274 if the effect is the measured +0.05 "
        "points (the 2 so far: 3 %), more than 10,000 if the spread is at its 80 % upper bound"
    )
    # five tight pairs, [-0.10, +0.30]: they exclude the claim's central +1 point, and say where the interval ends
    tight = verdict(paired_interval([20.1, 20.3, 19.9, 20.2, 20.0], [20.0] * 5), coarse).sentence
    assert tight.startswith("inconclusive")
    assert tight.endswith("it does exclude the claim's central figure (+1.00 points): the effect is below +0.30 "
                          "points, where the interval ends")  # fmt: skip
    # a resolution of 0.9 below the estimate: the estimate itself must clear it, which takes far more seeds
    coarse_measure = Interval(0.5, -0.5, 1.5, "paired t", 6, (1.0,), resolution=(0.9, 0.9))
    sentence = verdict(coarse_measure, coarse).sentence
    assert "about 72 if the effect is the claim's +1.00 points" in sentence  # se <= 0.1 / z(0.8) = 0.119: n >= 71
    assert "no number of seeds if the effect is the measured +0.50 points (the measurement resolves 0.9 at best)" in (
        sentence
    )
    # a negative claim (the variant errs less), on the other side of no effect
    fewer = Claim("cifar10", "top1", -1.0, 1.0, "whole percents")
    negative = verdict(paired_interval([19.9, 20.1, 19.8, 20.0, 19.95], [20.0] * 5), fewer).sentence
    assert negative.endswith("the effect is above -0.19 points, where the interval ends")
    # an estimate of exactly no effect: no number of seeds; none without a spread
    zero = verdict(paired_interval([20.2, 19.8, 20.0], [20.0] * 3), coarse).sentence
    assert "no number of seeds if the effect is the measured +0.00 points" in zero
    assert "seeds per variant" not in verdict(interval(-0.2, 0.3, math.nan), coarse).sentence


def test_seeds_to_exclude_no_effect_on_a_ratio_and_under_welch() -> None:
    """A speedup claim is judged on the log scale and shown as a ratio; runs of unequal seeds use Welch's df."""
    six = Claim("cifar10", "speedup", 6.0, 5.0, "a figure read off a plot")  # 1x to 11x: reaches no effect
    ratio = Interval(math.log(1.5), math.log(0.9), math.log(2.5), "paired t", 6, (0.3,))
    sentence = verdict(ratio, six).sentence
    assert (
        "it does exclude the claim's central figure (6x): the effect is below 2.5x, where the interval ends" in sentence
    )
    ks = np.arange(2, 999)
    n = int(ks[np.flatnonzero(exact_power(math.log(1.5), 0.3, ks) >= 0.8)[0]])
    assert f"about {n} if the effect is the measured 1.5x" in sentence
    welch = welch_interval([20.5, 21.5, 20.0], [20.0, 20.5, 19.5, 20.2, 20.1, 19.9, 20.3, 20.0, 19.8, 20.4])
    sa, sb = welch.spreads
    va, vb = sa**2 / ks, sb**2 / ks
    df = (va + vb) ** 2 / ((va**2 + vb**2) / (ks - 1))  # Welch-Satterthwaite, k runs a side
    power = stats.nct.sf(stats.t.ppf(0.975, df), df, 1.0 / np.sqrt(va + vb))
    sentence = verdict(welch, Claim("cifar10", "top1", 1.0, 1.0, "whole percents")).sentence
    assert f"(sds {sa:.2g} / {sb:.2g}), seeds per variant" in sentence
    assert f"about {ks[np.flatnonzero(power >= 0.8)[0]]} if the effect is the claim's +1.00 points" in sentence
    # a measured effect too small for the cap of seeds
    tiny = verdict(paired_interval([20.001, 20.3, 19.7], [20.0] * 3), Claim("cifar10", "top1", 1.0, 1.0, "x"))
    assert "more than 10,000 if the effect is the measured +0.00033 points" in tiny.sentence


def test_inconclusive_says_how_many_seeds_would_decide() -> None:
    wide = paired_interval([21.0, 23.5, 19.8], [20.0, 20.5, 21.1])
    result = verdict(wide, ONE_POINT)
    gap = 0.75  # from no effect to the band's near edge
    n = seeds_needed(wide, gap)
    assert result.label == "inconclusive" and f"about {n} seeds per variant" in result.sentence
    sd = wide.spreads[0]

    def half(k: int) -> float:
        return stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k)

    assert half(n) < gap / 2 <= half(n - 1)  # the first n whose half-width is under half the gap
    welch = welch_interval([21.0, 23.5, 19.8], [20.0, 20.5, 21.1])
    m = seeds_needed(welch, 1.0)
    va = welch.spreads[0] ** 2 / m + welch.spreads[1] ** 2 / m
    df = va**2 / ((welch.spreads[0] ** 4 + welch.spreads[1] ** 4) / m**2 / (m - 1))
    assert stats.t.ppf(0.975, df) * math.sqrt(va) < 0.5
    assert seeds_needed(compare({1: 20.0}, {1: 19.0}), 1.0) is None  # no spread to go by
    coarse = compare({1: 1.0, 2: 1.1, 3: 0.9}, {1: 0.0, 2: 0.1, 3: 0.0}, resolution=(0.6, 0.6))
    assert seeds_needed(coarse, 1.0) is None  # the resolution alone is wider than half the gap: seeds cannot help
