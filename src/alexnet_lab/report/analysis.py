"""A sweep's rows, statistics and verdicts: jobs grouped into variants (a tuned key's best setting chosen), mean
and spread of each error, each variant's difference from the baseline, and the checks of the paper's claims.
The tests behind them live in :mod:`alexnet_lab.stats`; nothing here renders."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnet_lab.report.sweep import Job, load_jobs, variant_keys
from alexnet_lab.stats import Interval, Verdict, compare, verdict

ERRORS = ("test/top1_err", "test/top5_err", "val/top1_err", "val/top5_err")
DIFFS = ("test/top1_err", "test/top5_err")  # the errors compared with the baseline
CLAIM_METRICS = {"top1": "test/top1_err", "top5": "test/top5_err"}  # a claim's keys and what they are measured on
METRIC_NAMES = {"test/top1_err": "test top-1 error", "test/top5_err": "test top-5 error"}


def mean(values: list[float | int | None]) -> float | None:
    """The mean of the values present, or None."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


@dataclass
class Row:
    """One variant: its jobs (for a tuned ablation, those of the chosen setting) and their statistics."""

    label: str
    values: dict[str, str]
    jobs: list[Job]
    tuned: dict[str, str] = field(default_factory=dict)  # the chosen value of each tuned key
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (mean, std) over finished seeds
    diffs: dict[str, Interval] = field(default_factory=dict)  # metric -> variant - baseline
    lrn: dict[str, tuple[float, float]] = field(default_factory=dict)  # layer -> mean (median, p99) divisor
    epochs: float | None = None  # mean epochs trained by the finished seeds
    seconds: float | None = None  # their mean wall time

    @property
    def finished(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "finished"]

    def by_seed(self, metric: str) -> dict[int | str, float]:
        return {j.seed: j.final[metric] for j in self.finished if metric in j.final}

    @property
    def milestones(self) -> list[tuple[float, bool]]:
        return [m for j in self.finished if (m := j.milestone_epochs) is not None]


@dataclass
class Check:
    """One of the paper's claims against one variant."""

    variant: str
    what: str  # e.g. "test top-1 error, variant - baseline (points)" or "epochs to the milestone, variant / baseline"
    interval: Interval  # on the scale the verdict is taken (log for ratios)
    claim: float
    verdict: Verdict
    ratio: bool = False  # interval and claim are logs of ratios
    lower_bound: bool = False  # some variant runs never reached the milestone: the ratio is at least this
    claim_dataset: str = ""

    def shown(self, value: float) -> str:
        return f"{math.exp(value):.2f}x" if self.ratio else f"{value:+.2f}"

    @property
    def measured(self) -> str:
        i = self.interval
        bound = "≥ " if self.lower_bound else ""
        if not i.decided:
            return bound + self.shown(i.estimate)
        return f"{bound}{self.shown(i.estimate)} [{self.shown(i.low)}, {self.shown(i.high)}]"


@dataclass
class Report:
    sweep: Path
    keys: list[str]
    rows: list[Row]
    baseline: Row | None
    dataset: str
    ablation: dict[str, Any]
    protocols: dict[str, str] = field(default_factory=dict)  # split -> evaluation views, e.g. test: 10-crop
    budget: str | None = None
    budget_epochs: Any = None
    checks: list[Check] = field(default_factory=list)
    tuning: list[tuple[str, str, str]] = field(default_factory=list)  # (variant, tuned setting, outcome)
    unchosen_failed: list[Job] = field(default_factory=list)  # failed runs of tuned settings not chosen

    @property
    def failed(self) -> list[Job]:
        return [j for row in self.rows for j in row.jobs if j.status == "failed"] + self.unchosen_failed

    @property
    def small_budget(self) -> bool:
        return self.budget == "small"


def _dataset(config: dict[str, Any]) -> str:
    target = str(config.get("data", {}).get("_target_", ""))
    return target.rsplit(".", 1)[-1].removesuffix("DataModule").lower() or "unknown"


def _protocols(config: dict[str, Any]) -> dict[str, str]:
    """How each split was evaluated: centre crops, 10 crops, or the whole image."""
    data = config.get("data", {})
    views = {"center": "centre crop", "ten_crop": "10-crop, softmax averaged"}
    imagenet = _dataset(config) == "imagenet"
    cropped = imagenet or (data.get("crop_size") not in (None, 32))
    return {s: views.get(data.get(f"{s}_protocol"), "one view") if cropped else "one view" for s in ("test", "val")}


def _milestone_mean(row_jobs: list[Job]) -> float:
    """Mean epochs to the milestone of finished runs, unreached ones counted at their cap; inf if none finished
    (a setting whose runs all diverged is never the fastest)."""
    values = [m[0] for j in row_jobs if (m := j.milestone_epochs) is not None]
    return statistics.fmean(values) if values else math.inf


def _group(jobs: list[Job], keys: list[str]) -> dict[str, tuple[dict[str, str], list[Job]]]:
    groups: dict[str, tuple[dict[str, str], list[Job]]] = {}
    for job in jobs:
        values = {k: job.overrides.get(k, "") for k in keys}
        label = ",".join(f"{k}={v}" for k, v in values.items()) or "all jobs"
        groups.setdefault(label, (values, []))[1].append(job)
    return groups


def build_report(sweep: Path) -> Report:
    jobs = load_jobs(sweep)
    if not jobs:
        raise FileNotFoundError(f"no job dirs (with .hydra/overrides.yaml) under {sweep}; give a multirun dir")
    config = next((j.config for j in jobs if j.config.get("ablation")), jobs[0].config)
    ablation = config.get("ablation") or {}
    all_keys = variant_keys(sweep, jobs)
    tune = [k for k in ablation.get("tune") or [] if k in all_keys]
    keys = [k for k in all_keys if k not in tune]
    report = Report(sweep, keys, [], None, _dataset(jobs[0].config), ablation, _protocols(jobs[0].config))
    report.budget = config.get("budget") if ablation.get("budgets") else None
    report.budget_epochs = (ablation.get("budgets") or {}).get(report.budget)

    for label, (values, group) in _group(jobs, keys).items():
        chosen, tuned = group, {}
        if tune:  # each variant takes the setting of the tuned keys that reaches the milestone fastest
            settings = _group(group, tune)
            # compared on the seeds every setting ran: the chosen one may then run more seeds alone
            shared = set.intersection(*({str(j.seed) for j in js} for _, js in settings.values()))
            tried = {s: [j for j in js if str(j.seed) in shared] for s, (_, js) in settings.items()}
            best = min(settings, key=lambda s: _milestone_mean(tried[s]))
            chosen, tuned = settings[best][1], settings[best][0]
            more = any(len(js) > len(tried[s]) for s, (_, js) in settings.items())
            on = f", seed{'s' if len(shared) > 1 else ''} {','.join(sorted(shared))}" if more else ""
            for setting, setting_jobs in tried.items():
                to_milestone = _milestone_mean(setting_jobs)
                reached = sum(1 for j in setting_jobs if (m := j.milestone_epochs) and m[1])
                finished = sum(1 for j in setting_jobs if j.status == "finished")
                outcome = (
                    "no finished run"
                    if math.isinf(to_milestone)
                    else f"{to_milestone:.1f} epochs ({reached}/{finished} reached{on})"
                )
                report.tuning.append((label, setting + (" (chosen)" if setting == best else ""), outcome))
                if setting != best:
                    report.unchosen_failed += [j for j in settings[setting][1] if j.status == "failed"]
        report.rows.append(Row(label, values, chosen, tuned))

    wanted = {k: str(v).lower() for k, v in (ablation.get("baseline") or {}).items()}
    report.baseline = next(
        (r for r in report.rows if wanted and all(r.values.get(k, "").lower() == v for k, v in wanted.items())),
        report.rows[0],
    )
    for row in report.rows:
        row.epochs, row.seconds = mean([j.epochs for j in row.finished]), mean([j.seconds for j in row.finished])
        for metric in ERRORS:
            values = list(row.by_seed(metric).values())
            if values:
                row.stats[metric] = (
                    statistics.fmean(values),
                    statistics.stdev(values) if len(values) > 1 else math.nan,
                )
        layers = sorted({k.split("/")[1] for j in row.finished for k in j.final if k.startswith("lrn/")})
        for layer in layers:
            medians = [
                j.final[f"lrn/{layer}/divisor_median"] for j in row.finished if f"lrn/{layer}/divisor_median" in j.final
            ]
            p99s = [j.final[f"lrn/{layer}/divisor_p99"] for j in row.finished if f"lrn/{layer}/divisor_p99" in j.final]
            if medians and p99s:
                row.lrn[layer] = (statistics.fmean(medians), statistics.fmean(p99s))
        if row is not report.baseline:
            for metric in DIFFS:
                ours, theirs = row.by_seed(metric), report.baseline.by_seed(metric)
                if ours and theirs:
                    row.diffs[metric] = compare(ours, theirs)
    report.checks = _checks(report)
    return report


def _claim(report: Report) -> tuple[dict[str, Any] | None, str]:
    """The claim this sweep tests: the one for its own dataset, else the paper's ImageNet figure."""
    claims = report.ablation.get("claims") or {}
    if report.dataset in claims:
        return claims[report.dataset], report.dataset
    if "imagenet" in claims:
        return claims["imagenet"], "imagenet"
    return None, ""


def _checks(report: Report) -> list[Check]:
    claim, claim_dataset = _claim(report)
    if not claim or report.baseline is None:
        return []
    checks = []
    for row in report.rows:
        if row is report.baseline:
            continue
        for key, metric in CLAIM_METRICS.items():
            if key in claim and metric in row.diffs:
                interval = row.diffs[metric]
                checks.append(
                    Check(row.label, f"{METRIC_NAMES[metric]}, variant - baseline (points)", interval,
                          float(claim[key]), verdict(interval, float(claim[key])), claim_dataset=claim_dataset)
                )  # fmt: skip
        if "speedup" in claim and row.milestones and report.baseline.milestones:
            ours = {j.seed: math.log(m[0]) for j in row.finished if (m := j.milestone_epochs) and m[0] > 0}
            theirs = {
                j.seed: math.log(m[0]) for j in report.baseline.finished if (m := j.milestone_epochs) and m[0] > 0
            }
            if not (ours and theirs):
                continue
            interval = compare(ours, theirs)
            target = math.log(float(claim["speedup"]))
            censored = [m for m in row.milestones if not m[1]]
            result = verdict(interval, target)
            if censored and result.label != "larger":
                cap = max(m[0] for m in censored)
                result = Verdict(
                    "inconclusive",
                    f"inconclusive: {len(censored)} of {len(row.milestones)} runs did not reach the milestone within "
                    f"{cap:g} epochs, so the ratio is only a lower bound; a higher epoch cap would decide it",
                )
            checks.append(
                Check(row.label, "epochs to the milestone, variant / baseline", interval, target, result,
                      ratio=True, lower_bound=bool(censored), claim_dataset=claim_dataset)
            )  # fmt: skip
    if report.small_budget:
        for check in checks:
            check.verdict = Verdict(
                "not decided", f"not decided at the small budget ({check.verdict.sentence.split(':')[0]} here)"
            )
    return checks
