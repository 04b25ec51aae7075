"""The statistics of an ablation: an interval for a variant's difference from its baseline (never narrower than the
measurement can resolve, open on the side a censored run leaves unknown), a claim with its precision, the verdict
that compares the two, and the number of seeds a decision would need. Intervals come from scipy.stats."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

LEVEL = 0.95  # confidence level of every interval


@dataclass(frozen=True)
class Interval:
    """variant - baseline: its estimate and 95 % interval (nan bounds when there are too few runs; an infinite bound
    where censored runs leave that side open), how it was computed, and the spread it came from (the std of
    pairwise differences, or of each side for Welch).

    ``resolution`` is what the measurement itself cannot tell apart (below, above the estimate): a milestone crossed
    somewhere inside one batch, a test error counted in whole images. The interval always covers it, so a spread
    of zero (every seed measured the same quantised value) never gives a zero-width interval.
    """

    estimate: float
    low: float
    high: float
    method: str  # "paired t" (variants share seeds: same data order and draws) | "Welch t" | "one run a side"
    n: int  # pairs (paired), or the smaller side's runs
    spreads: tuple[float, ...]  # (std of differences,) or (std variant, std baseline)
    resolution: tuple[float, float] = (0.0, 0.0)
    notes: tuple[str, ...] = ()  # what bounds it besides the t interval: the resolution, censored runs
    censored: str = ""  # "variant", "baseline" or "both": some runs on that side never reached the milestone

    @property
    def decided(self) -> bool:
        return not math.isnan(self.low)

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


def paired_interval(variant: list[float], baseline: list[float], level: float = LEVEL) -> Interval:
    """Mean of the pairwise differences variant[i] - baseline[i] and its t interval (scipy's ``ttest_rel``)."""
    diffs = [a - b for a, b in zip(variant, baseline, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Interval(mean, math.nan, math.nan, "one run a side", len(diffs), (math.nan,))
    sd = statistics.stdev(diffs)
    if sd == 0:  # scipy's t statistic is undefined; the t interval has zero width
        return Interval(mean, mean, mean, "paired t", len(diffs), (0.0,))
    ci = stats.ttest_rel(variant, baseline).confidence_interval(level)
    return Interval(mean, float(ci.low), float(ci.high), "paired t", len(diffs), (sd,))


def welch_interval(variant: list[float], baseline: list[float], level: float = LEVEL) -> Interval:
    """mean(variant) - mean(baseline) and its Welch t interval (scipy's ``ttest_ind(equal_var=False)``)."""
    diff = statistics.fmean(variant) - statistics.fmean(baseline)
    n = min(len(variant), len(baseline))
    if n < 2:
        return Interval(diff, math.nan, math.nan, "one run a side", n, (math.nan, math.nan))
    sa, sb = statistics.stdev(variant), statistics.stdev(baseline)
    if sa == sb == 0:
        return Interval(diff, diff, diff, "Welch t", n, (sa, sb))
    ci = stats.ttest_ind(variant, baseline, equal_var=False).confidence_interval(level)
    return Interval(diff, float(ci.low), float(ci.high), "Welch t", n, (sa, sb))


def compare(
    variant: Mapping[int | str, float],
    baseline: Mapping[int | str, float],
    resolution: tuple[float, float] = (0.0, 0.0),
    censored: tuple[bool, bool] = (False, False),
) -> Interval:
    """Runs keyed by seed: paired when both sides ran the same seeds (two or more), else Welch; then widened to the
    ``resolution`` (below, above the estimate); ``censored`` = (some variant run, some baseline run) stopped before
    the event, so its value is only a lower bound (see :func:`censor`)."""
    if set(variant) == set(baseline) and len(variant) >= 2:
        seeds = sorted(variant, key=str)
        interval = paired_interval([variant[s] for s in seeds], [baseline[s] for s in seeds])
    else:
        interval = welch_interval(list(variant.values()), list(baseline.values()))
    return censor(widen(interval, resolution), *censored)


def widen(interval: Interval, resolution: tuple[float, float]) -> Interval:
    """The interval, covering at least ``resolution`` below and above its estimate."""
    below, above = resolution
    if not interval.decided:
        return replace(interval, resolution=resolution)
    zero_spread = all(s == 0 for s in interval.spreads)
    if below == above == 0:
        if zero_spread:  # a point interval would claim a precision nobody measured: undecided, and said why
            unknown = "zero spread (every seed measured the same value) and the measurement's resolution unknown"
            return replace(interval, low=math.nan, high=math.nan, notes=(*interval.notes, unknown))
        return replace(interval, resolution=resolution)
    low, high = min(interval.low, interval.estimate - below), max(interval.high, interval.estimate + above)
    notes = interval.notes
    if zero_spread:
        zero = (
            f"zero spread (every seed measured the same value): the resolution ({below:.2g} below, {above:.2g} above)"
        )
        notes += (f"{zero} stands in for it",)
    elif (low, high) != (interval.low, interval.high):
        notes += ("widened to the measurement's resolution",)
    return replace(interval, low=low, high=high, resolution=resolution, notes=notes)


def censor(interval: Interval, variant: bool, baseline: bool) -> Interval:
    """With censored runs no t interval applies: a run's value is only a lower bound, and as it grows the t interval's
    near end moves away too (the mean and the spread grow together), so neither end bounds anything. The interval
    is left open on both sides; the estimate, taken with those runs at their caps, is a lower bound when only
    variant runs are censored and an upper bound when only baseline runs are."""
    if not (variant or baseline):
        return interval
    side = "both" if variant and baseline else "variant" if variant else "baseline"
    what = {"variant": "some variant runs", "baseline": "some baseline runs", "both": "runs on both sides"}[side]
    note = f"{what} never reached the milestone: no interval until they do"
    return replace(interval, low=-math.inf, high=math.inf, censored=side, notes=(*interval.notes, note))


@dataclass(frozen=True)
class Claim:
    """A figure from the literature with its source and its precision: on the verdict's scale the claim is the band
    ``value ± tolerance`` (a rounded percentage, a figure read off a plot), never a point."""

    dataset: str  # what the figure was measured on: cifar10 | imagenet
    metric: str  # top1 | top5 (points of test error, variant - baseline) | speedup (epochs, variant / baseline)
    value: float
    tolerance: float
    source: str  # e.g. "paper, Sec. 3.3" or "cuda-convnet, layer-params-18pct.cfg"
    text: str = ""

    @property
    def ratio(self) -> bool:
        return self.metric == "speedup"

    @property
    def none(self) -> float:
        """No effect, on the verdict's scale (log for ratios)."""
        return 0.0

    @property
    def centre(self) -> float:
        """The claim's figure on the verdict's scale."""
        return math.log(self.value) if self.ratio else self.value

    def effect_text(self, x: float) -> str:
        """A value on the verdict's scale as the claim's unit reads it: +0.40 points, +0.0031 points, 5.2x."""
        if self.ratio:
            return f"{math.exp(x):.3g}x"
        return f"{x:+.2f} points" if abs(x) >= 0.01 or x == 0 else f"{x:+.2g} points"

    @property
    def band(self) -> tuple[float, float]:
        """(low, high) on the verdict's scale: differences as they are, ratios as logs."""
        low, high = self.value - self.tolerance, self.value + self.tolerance
        return (math.log(low) if low > 0 else -math.inf, math.log(high)) if self.ratio else (low, high)

    @property
    def shown(self) -> str:
        unit = "x" if self.ratio else " points"
        return f"{self.value:g}{unit} ± {self.tolerance:g}"


SEEDS_CAP = 10_000  # the seed counts below look no further
POWER = 0.8  # the chance a planned number of seeds gives of excluding no effect, when the effect is as assumed


def _t_terms(interval: Interval, ns: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(degrees of freedom, standard error) of the interval's kind with ``ns`` seeds per variant, at its observed
    spread times ``scale``."""
    if interval.method == "paired t":
        return ns - 1, scale * interval.spreads[0] / np.sqrt(ns)
    va, vb = ((scale * s) ** 2 / ns for s in interval.spreads)
    df = np.where(va + vb > 0, (va + vb) ** 2 / np.maximum((va**2 + vb**2) / (ns - 1), 1e-300), ns - 1)
    return df, np.sqrt(va + vb)


def _half_widths(interval: Interval, ns: np.ndarray) -> np.ndarray:
    """The t interval's half-width with each seed count in ``ns`` (per variant), at the interval's observed spread."""
    df, se = _t_terms(interval, ns)
    return stats.t.ppf(0.5 + LEVEL / 2, df) * se


def _power(interval: Interval, ns: np.ndarray, distance: float, floor: float, scale: float = 1.0) -> np.ndarray:
    """The chance, with each seed count in ``ns``, that the interval lies wholly on the far side of no effect when the
    true effect is ``distance`` away from it (the spread, times ``scale``, taken as known): its t statistic must pass
    the critical value (noncentral t), and its estimate the measurement's resolution on that side, ``floor``."""
    df, se = _t_terms(interval, ns, scale)
    se = np.maximum(se, 1e-300)
    critical = stats.t.ppf(0.5 + LEVEL / 2, df)
    with warnings.catch_warnings():  # scipy warns where its series for far tails does not converge: NaN, replaced
        warnings.simplefilter("ignore", RuntimeWarning)
        exact = stats.nct.sf(critical, df, distance / se)
    central = stats.t.cdf(distance / se - critical, df)  # where scipy's noncentral t gives no number (far tails)
    return np.minimum(np.where(np.isnan(exact), central, exact), stats.t.cdf((distance - floor) / se, df))


def seeds_needed(interval: Interval, gap: float, cap: int = SEEDS_CAP) -> int | None:
    """Seeds (per variant) that would bring the interval's half-width under half of ``gap`` (the distance from no
    effect to the claim's band), at the observed spread; None without a spread to extrapolate from."""
    target = abs(gap) / 2
    if any(math.isnan(s) for s in interval.spreads) or target == 0 or interval.censored:
        return None
    floor = max(interval.resolution)
    if floor >= target:
        return None
    ns = np.arange(2, cap + 1)
    under = np.flatnonzero(_half_widths(interval, ns) < target)
    return max(int(ns[under[0]]), interval.n + 1) if under.size else cap  # never fewer seeds than already ran


def _seeds_to_exclude_none(interval: Interval, claim: Claim) -> str:
    """What more seeds could do when the claim's band reaches no effect: for an effect of the claim's central size
    and of the measured size, the seeds per variant that give an 80 % chance of an interval excluding no effect at
    the observed spread, and the chance the runs made so far had; with a spread from under five degrees of freedom,
    also the seeds needed if the spread is at its 80 % upper confidence bound."""
    if any(math.isnan(s) for s in interval.spreads) or interval.censored:
        return ""
    ns = np.arange(2, SEEDS_CAP + 1)
    paired = interval.method == "paired t"
    df = interval.n - 1
    upper = math.sqrt(df / stats.chi2.ppf(1 - POWER, df)) if paired and df < 5 else None  # sd's 80 % upper bound
    planned = []
    for effect, what in ((claim.centre, "the claim's"), (interval.estimate, "the measured")):
        distance, shown = abs(effect - claim.none), f"if the effect is {what} {claim.effect_text(effect)}"
        floor = interval.resolution[0] if effect > claim.none else interval.resolution[1]  # its side facing none
        if distance == 0 or floor >= distance:
            planned.append(f"no number of seeds {shown}" + (f" (the measurement resolves {floor:.2g} at best)"
                                                              if distance else ""))  # fmt: skip
            continue
        needed = [
            np.flatnonzero(_power(interval, ns, distance, floor, scale) >= POWER) for scale in (1.0, upper or 1.0)
        ]
        counts = [f"{ns[n[0]]:,}" if n.size else f"more than {SEEDS_CAP:,}" for n in needed]
        so_far = float(_power(interval, np.array([interval.n]), distance, floor)[0])
        line = f"{'' if needed[0].size == 0 else 'about '}{counts[0]} {shown} (the {interval.n} so far: {so_far * 100:.0f} %)"
        if upper is not None:
            line += f", {counts[1]} if the spread is at its 80 % upper bound"
        planned.append(line)
    spreads = [f"{s:.2g}" for s in interval.spreads]
    spread = (f"sd of the paired differences {spreads[0]}, from {interval.n} pairs" if paired
              else f"sds {' / '.join(spreads)}")  # fmt: skip
    return (f"; at the observed spread ({spread}), seeds per variant for an {POWER * 100:.0f} % chance of an "
            "interval that excludes no effect: " + "; ".join(planned))  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    label: str  # agrees | smaller | larger | opposite | no effect | inconclusive (| not bracketed | not decided)
    sentence: str


def verdict(interval: Interval, claim: Claim) -> Verdict:
    """What the interval says of the claim's band: *agrees* (excludes no effect, meets the band), *smaller* or
    *larger* (excludes no effect, misses the band on that side), *opposite* (excludes no effect on the other
    side), *no effect* (holds no effect, misses the band), *inconclusive* (holds no effect and meets the band)."""
    if interval.censored:
        return Verdict("inconclusive", "inconclusive: some runs never reached the milestone within their epoch cap, "
                       "so their values are only lower bounds; raise trainer.max_epochs and resume them (the same "
                       "multirun with its hydra.sweep.dir) to decide it")  # fmt: skip
    if not interval.decided:
        if any("resolution unknown" in note for note in interval.notes):
            return Verdict("inconclusive", "inconclusive: every seed measured the same value and the measurement's "
                           "resolution is not recorded, so no interval can be given")  # fmt: skip
        return Verdict("inconclusive", "inconclusive: one run a side gives no interval; run at least two seeds each")
    none, (low, high) = claim.none, claim.band
    meets = interval.low <= high and interval.high >= low
    side = 1.0 if claim.value - (1.0 if claim.ratio else 0.0) >= 0 else -1.0  # the claim's direction
    if not interval.holds(none):
        if meets:
            return Verdict("agrees", "agrees with the claim: the interval excludes no effect and meets its band")
        if (interval.estimate - none) * side < 0:
            return Verdict("opposite", "opposite to the claim: the interval excludes no effect, on the other side")
        if (interval.high < low) == (side > 0):
            return Verdict(
                "smaller", "smaller than the claim: the interval excludes no effect and lies short of its band"
            )
        return Verdict("larger", "larger than the claim: the interval excludes no effect and lies beyond its band")
    if not meets:
        return Verdict("no effect", "no effect detected: the interval holds no effect and misses the claim's band")
    gap = min(abs(low - none), abs(high - none)) if not low <= none <= high else 0.0
    if gap == 0:
        more = ("the claim's band reaches no effect (its figures are too coarse to tell a small effect from none), "
                "so only an interval that excludes no effect can decide it")  # fmt: skip
        more += _seeds_to_exclude_none(interval, claim)
        if not interval.holds(claim.centre):  # what it does tell: the effect is not the claim's central figure
            side, end = ("below", interval.high) if interval.high < claim.centre else ("above", interval.low)
            more += (f"; it does exclude the claim's central figure ({claim.effect_text(claim.centre)}): the effect is "
                     f"{side} {claim.effect_text(end)}, where the interval ends")  # fmt: skip
    elif (needed := seeds_needed(interval, gap)) is not None:
        more = f"about {needed} seeds per variant would bring the interval's half-width under half the gap"
    else:
        more = "more seeds, or a finer measurement, would decide it"
    return Verdict("inconclusive", f"inconclusive: the interval holds both no effect and the claim's band; {more}")
