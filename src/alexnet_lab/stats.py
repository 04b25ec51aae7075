"""The statistics of an ablation: an interval for a variant's difference from its baseline, the verdict on a claim
of the paper, and the number of seeds a decision would need. Quantiles come from scipy.stats."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.95  # confidence level of every interval


@dataclass(frozen=True)
class Interval:
    """variant - baseline: its estimate and 95 % interval (nan bounds when there are too few runs), how it was
    computed, and the spread it came from (the std of pairwise differences, or of each side for Welch)."""

    estimate: float
    low: float
    high: float
    method: str  # "paired t" (variants share seeds: same data order and draws) | "Welch t" | "one run a side"
    n: int  # pairs (paired), or the smaller side's runs
    spreads: tuple[float, ...]  # (std of differences,) or (std variant, std baseline)

    @property
    def decided(self) -> bool:
        return not math.isnan(self.low)

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


def t_quantile(p: float, df: float) -> float:
    return float(stats.t.ppf(p, df))


def paired_interval(variant: list[float], baseline: list[float], level: float = LEVEL) -> Interval:
    """Mean of the pairwise differences variant[i] - baseline[i] and its t interval (n - 1 degrees of freedom)."""
    diffs = [a - b for a, b in zip(variant, baseline, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Interval(mean, math.nan, math.nan, "one run a side", len(diffs), (math.nan,))
    sd = statistics.stdev(diffs)
    half = t_quantile(0.5 + level / 2, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return Interval(mean, mean - half, mean + half, "paired t", len(diffs), (sd,))


def welch_interval(variant: list[float], baseline: list[float], level: float = LEVEL) -> Interval:
    """mean(variant) - mean(baseline) and its Welch t interval (unequal variances, Welch-Satterthwaite df)."""
    diff = statistics.fmean(variant) - statistics.fmean(baseline)
    n = min(len(variant), len(baseline))
    if n < 2:
        return Interval(diff, math.nan, math.nan, "one run a side", n, (math.nan, math.nan))
    sa, sb = statistics.stdev(variant), statistics.stdev(baseline)
    va, vb = sa**2 / len(variant), sb**2 / len(baseline)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, "Welch t", n, (sa, sb))
    df = (va + vb) ** 2 / (va**2 / (len(variant) - 1) + vb**2 / (len(baseline) - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return Interval(diff, diff - half, diff + half, "Welch t", n, (sa, sb))


def compare(variant: Mapping[int | str, float], baseline: Mapping[int | str, float]) -> Interval:
    """Runs keyed by seed: paired when both sides ran the same seeds (two or more), else Welch."""
    if set(variant) == set(baseline) and len(variant) >= 2:
        seeds = sorted(variant, key=str)
        return paired_interval([variant[s] for s in seeds], [baseline[s] for s in seeds])
    return welch_interval(list(variant.values()), list(baseline.values()))


def seeds_needed(interval: Interval, claim: float, cap: int = 10_000) -> int | None:
    """Seeds (per variant) that would bring the interval's half-width under half the claim, at the observed spread;
    None without a spread to extrapolate from (fewer than two runs a side)."""
    target = abs(claim) / 2
    if any(math.isnan(s) for s in interval.spreads) or target == 0:
        return None
    for n in range(2, cap + 1):
        if interval.method == "paired t":
            half = t_quantile(0.5 + LEVEL / 2, n - 1) * interval.spreads[0] / math.sqrt(n)
        else:
            va, vb = (s**2 / n for s in interval.spreads)
            if va + vb == 0:
                return n
            df = (va + vb) ** 2 / ((va**2 + vb**2) / (n - 1))
            half = t_quantile(0.5 + LEVEL / 2, df) * math.sqrt(va + vb)
        if half < target:
            return n
    return cap


@dataclass(frozen=True)
class Verdict:
    label: str  # agrees | smaller | larger | opposite | no effect | inconclusive
    sentence: str


def verdict(interval: Interval, claim: float, none: float = 0.0) -> Verdict:
    """What the interval says of the paper's ``claim`` (same sign convention as the interval; ``none`` is the
    value meaning no effect: 0 for differences, 0 for log-ratios)."""
    if not interval.decided:
        return Verdict("inconclusive", "inconclusive: one run a side gives no interval; run at least two seeds each")
    holds_none, holds_claim = interval.holds(none), interval.holds(claim)
    if not holds_none and holds_claim:
        return Verdict("agrees", "agrees with the paper: the interval excludes no effect and holds the claim")
    if not holds_none:
        if (interval.estimate - none) * (claim - none) < 0:
            return Verdict("opposite", "opposite to the paper: the interval excludes no effect, on the other side")
        if abs(interval.high - none) < abs(claim - none) and abs(interval.low - none) < abs(claim - none):
            return Verdict("smaller", "smaller than the paper: the interval excludes both no effect and the claim")
        return Verdict("larger", "larger than the paper: the interval excludes both no effect and the claim")
    if not holds_claim:
        return Verdict("no effect", "no effect detected: the interval holds no effect and excludes the claim")
    needed = seeds_needed(interval, claim - none)
    more = (
        f"about {needed} seeds per variant would bring the interval's half-width under half the claim"
        if needed is not None
        else "more seeds would decide it"
    )
    return Verdict("inconclusive", f"inconclusive: the interval holds both no effect and the claim; {more}")
