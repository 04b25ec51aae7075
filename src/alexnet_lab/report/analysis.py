"""A sweep's rows, statistics and verdicts: jobs grouped into variants (a tuned key's fastest setting chosen on the
selection seeds, and checked to be bracketed by its grid), mean and spread of each error, each variant's difference
from the baseline, and the checks of the claims. The tests behind them live in :mod:`alexnet_lab.stats`; nothing
here renders."""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnet_lab.protocols import PROTOCOLS
from alexnet_lab.report.sweep import Job, Search, load_jobs, project_ablation, search_of, variant_keys
from alexnet_lab.stats import Claim, Interval, Verdict, compare, verdict

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
    """One variant: its jobs (for a tuned ablation, those of the chosen setting on the estimation seeds) and their
    statistics."""

    label: str
    values: dict[str, str]
    jobs: list[Job]
    tuned: dict[str, str] = field(default_factory=dict)  # the chosen value of each tuned key
    unbracketed: str | None = None  # why the chosen setting is not bracketed by its grid, and what to add
    unchosen: str | None = None  # why no setting of a tuned key is chosen yet
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (mean, std) over finished seeds
    diffs: dict[str, Interval] = field(default_factory=dict)  # metric -> variant - baseline
    lrn: dict[str, tuple[float, float]] = field(default_factory=dict)  # layer -> mean (median, p99) divisor
    lrn_from: list[str] = field(default_factory=list)  # the passes they were measured over
    reference: dict[str, Any] | None = None  # the variant's own published figure, e.g. cuda-convnet's 18 %
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
    """One claim against one variant."""

    variant: str
    claim: Claim
    what: str  # e.g. "test top-1 error, variant - baseline (points)" or "epochs to the milestone, variant / baseline"
    interval: Interval  # on the scale the verdict is taken (log for ratios)
    verdict: Verdict
    own_dataset: bool = True  # False: a figure from another dataset (the paper's ImageNet numbers on CIFAR-10)

    @property
    def ratio(self) -> bool:
        return self.claim.ratio

    def shown(self, value: float) -> str:
        if math.isinf(value):
            return "∞" if value > 0 else ("0x" if self.ratio else "-∞")
        return f"{math.exp(value):.2f}x" if self.ratio else f"{value:+.2f}"

    @property
    def measured(self) -> str:
        i = self.interval
        if i.censored == "variant":
            return f"≥ {self.shown(i.estimate)} (runs that never reached it counted at their cap; no interval)"
        if i.censored == "baseline":
            return f"≤ {self.shown(i.estimate)} (baseline runs that never reached it counted at their cap; no interval)"
        if i.censored:
            return f"{self.shown(i.estimate)} (runs on both sides never reached it; no interval)"
        if not i.decided:
            return f"{self.shown(i.estimate)} (no interval: one run a side)"
        if math.isinf(i.high) and math.isinf(i.low):
            return f"{self.shown(i.estimate)} (unbounded: runs on both sides never reached the milestone)"
        if math.isinf(i.high):
            return f"≥ {self.shown(i.low)} (estimate {self.shown(i.estimate)}, open above)"
        if math.isinf(i.low):
            return f"≤ {self.shown(i.high)} (estimate {self.shown(i.estimate)}, open below)"
        return f"{self.shown(i.estimate)} [{self.shown(i.low)}, {self.shown(i.high)}]"


@dataclass
class Report:
    sweep: Path
    keys: list[str]
    rows: list[Row]
    baseline: Row | None
    dataset: str
    ablation: dict[str, Any]
    claims: list[Claim] = field(default_factory=list)
    protocols: dict[str, str] = field(default_factory=dict)  # split -> evaluation views, e.g. test: 10-crop
    experiment: str | None = None  # the experiment config the sweep ran (Hydra's choice)
    budget: str | None = None
    budget_epochs: Any = None
    checks: list[Check] = field(default_factory=list)
    tuning: list[tuple[str, str, str]] = field(default_factory=list)  # (variant, tuned setting, outcome)
    selection_seeds: list[str] = field(default_factory=list)  # the seeds that chose the tuned settings
    unchosen: list[Job] = field(default_factory=list)  # runs that only served the choice (other settings, selection)
    search: Search | None = None  # an Optuna search: its trials are ranked, not compared with a baseline

    @property
    def failed(self) -> list[Job]:
        jobs = [j for row in self.rows for j in row.jobs] + self.unchosen
        return [j for j in jobs if j.status in ("failed", "unreadable")]

    @property
    def small_budget(self) -> bool:
        return self.budget == "small"

    @property
    def schedule(self) -> str | None:
        """What the budget's epochs are and where they come from (the experiment's ``schedules``)."""
        return (self.ablation.get("schedules") or {}).get(self.budget)


SHAPES = {"budgets": dict, "baseline": dict, "schedules": dict, "references": dict, "milestone": dict, "tune": list,
          "selection_seeds": list, "claims": (list, dict)}  # fmt: skip


def _shaped(ablation: Any) -> dict[str, Any]:
    """An ``ablation`` block from a job dir, with every entry of the wrong type dropped (a file from elsewhere)."""
    if not isinstance(ablation, dict):
        return {}
    out = {k: v for k, v in ablation.items() if k not in SHAPES or isinstance(v, SHAPES[k])}
    if "name" in out:
        out["name"] = str(out["name"])
    if isinstance(out.get("milestone"), dict) and not isinstance(out["milestone"].get("below"), (int, float)):
        out.pop("milestone")
    if "tune" in out:
        out["tune"] = [str(k) for k in out["tune"]]
    return out


def _data(config: dict[str, Any]) -> dict[str, Any]:
    data = config.get("data")
    return data if isinstance(data, dict) else {}


def _dataset(config: dict[str, Any]) -> str:
    target = str(_data(config).get("_target_", ""))
    return target.rsplit(".", 1)[-1].removesuffix("DataModule").lower() or "unknown"


def _protocols(config: dict[str, Any]) -> dict[str, str]:
    """How each split was evaluated: centre crops, 10 crops, or the whole image."""
    data = _data(config)
    imagenet = _dataset(config) == "imagenet"
    cropped = imagenet or (data.get("crop_size") not in (None, 32))
    return {s: PROTOCOLS.get(data.get(f"{s}_protocol"), "one view") if cropped else "one view" for s in ("test", "val")}


def rank(jobs: list[Job]) -> tuple[float, float]:
    """How fast a setting reaches the milestone: (runs that never reached it, mean epochs of those that did). A run
    that never got there (its cap ran out, or it failed: diverged) ranks behind every run that did, whatever its
    epoch cap; a setting without a completed run ranks last."""
    marks = [j.milestone_epochs or (math.inf, False) for j in jobs if j.status in ("finished", "failed")]
    if not marks:
        return math.inf, math.inf
    reached = [e for e, ok in marks if ok]
    return len(marks) - len(reached), statistics.fmean(reached) if reached else math.inf


def _group(jobs: list[Job], keys: list[str]) -> dict[str, tuple[dict[str, str], list[Job]]]:
    groups: dict[str, tuple[dict[str, str], list[Job]]] = {}
    for job in jobs:
        values = {k: job.overrides.get(k, "") for k in keys}
        label = ",".join(f"{k}={v}" for k, v in values.items()) or "all jobs"
        groups.setdefault(label, (values, []))[1].append(job)
    return groups


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _grid_order(values: dict[str, str], keys: list[str]) -> tuple:
    """Sorts a grid's settings from the smallest value up (numbers as numbers, then text)."""
    return tuple((n is None, n if n is not None else 0.0, values[k]) for k in keys for n in [_number(values[k])])


def bracket(settings: dict[str, dict[str, str]], chosen: str, keys: list[str]) -> str | None:
    """None when the chosen setting of every tuned key lies inside its grid (a value tried on either side); else what
    is missing, and the value to add (the grid's step continued)."""
    for key in keys:
        if any(_number(s[key]) is None for s in settings.values()):
            continue  # not numbers: no order to be inside of
        values = sorted({_number(s[key]) for s in settings.values()})
        value = _number(settings[chosen][key])
        if len(values) < 2:
            return f"{key}={value:g} was the only value tried; add a lower and a higher one"
        if value in (values[0], values[-1]):
            top = value == values[-1]
            edge, inner = (values[-1], values[-2]) if top else (values[0], values[1])
            steps = [b - a for a, b in itertools.pairwise(values)]
            ratios = [b / a for a, b in itertools.pairwise(values)] if all(v > 0 for v in values) else []
            if ratios and max(ratios) - min(ratios) < 1e-9 * max(ratios) or (ratios and len(values) == 2):
                beyond = edge * ratios[0] if top else edge / ratios[0]  # a geometric grid continued
            elif max(steps) - min(steps) < 1e-9 * max(abs(s) for s in steps):
                beyond = edge + steps[0] if top else edge - steps[0]  # an arithmetic grid continued
            else:
                beyond = edge + (edge - inner)
            where = "top" if top else "bottom"
            grid = ", ".join(f"{v:g}" for v in values)
            return f"{key}={value:g} is the {where} of its grid ({grid}); add {key}={beyond:.6g}"
    return None


def build_report(sweep: Path) -> Report:
    jobs = load_jobs(sweep)
    if not jobs:
        raise FileNotFoundError(f"no job dirs (with .hydra/overrides.yaml) under {sweep}; give a multirun dir")
    source = next((j for j in jobs if j.config.get("ablation")), jobs[0])
    config, experiment = source.config, source.experiment
    ablation = _shaped({**_shaped(config.get("ablation")), **(project_ablation(experiment) if experiment else {})})
    search = search_of(jobs)
    all_keys = search.params if search and search.params else variant_keys(sweep, jobs)  # a search: what it searched
    tune = [k for k in ablation.get("tune") or [] if k in all_keys]
    keys = [k for k in all_keys if k not in tune]
    report = Report(
        sweep, keys, [], None, _dataset(jobs[0].config), ablation, claims=parse_claims(ablation.get("claims")),
        protocols=_protocols(jobs[0].config), experiment=experiment, search=search,
    )  # fmt: skip
    report.budget = str(config.get("budget")) if ablation.get("budgets") and config.get("budget") is not None else None
    epochs = (ablation.get("budgets") or {}).get(report.budget)
    report.budget_epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
    configured = [str(s) for s in ablation.get("selection_seeds") or []]

    for label, (values, group) in _group(jobs, keys).items():
        chosen, tuned, unbracketed, why = group, {}, None, None
        if tune:  # each variant takes the setting of the tuned keys that reaches the milestone fastest
            settings = _group(group, tune)
            # chosen on the selection seeds (the configured ones, else those every setting ran), compared on the
            # selection seeds every setting completed (finished, or failed: a failure never reached the milestone);
            # never reused in the estimate
            selection = set(configured) or set.intersection(*({str(j.seed) for j in js} for _, js in settings.values()))
            completed = [{str(j.seed) for j in js if j.status in ("finished", "failed") and str(j.seed) in selection}
                         for _, js in settings.values()]  # fmt: skip
            shared = set.intersection(*completed) if completed else set()
            waiting = sorted({str(j.seed) for _, js in settings.values() for j in js
                              if str(j.seed) in selection and j.status not in ("finished", "failed")})  # fmt: skip
            tried = {s: [j for j in js if str(j.seed) in shared] for s, (_, js) in settings.items()}
            ranks = {s: rank(tried[s]) for s in settings}
            best = min(settings, key=lambda s: ranks[s])
            report.selection_seeds = sorted(selection | set(report.selection_seeds), key=lambda s: (len(s), s))
            if waiting or not shared or math.isinf(ranks[best][1]):  # no choice yet: no estimate, no verdict
                why = (f"selection runs not finished yet (seeds {','.join(waiting)})" if waiting else
                       f"no run on the selection seeds {','.join(sorted(selection))} yet" if not shared else
                       "no setting reached the milestone on the selection seeds: widen the grid or raise the cap")  # fmt: skip
                chosen, tuned, unbracketed, best = [], {}, None, ""
            else:
                tuned = settings[best][0]
                chosen = [j for j in settings[best][1] if str(j.seed) not in selection]
                unbracketed = bracket({s: v for s, (v, _) in settings.items()}, best, tune)
            report.unchosen += [j for s, (_, js) in settings.items() for j in js if s != best or j not in chosen]
            on = f"seed{'s' if len(shared) > 1 else ''} {','.join(sorted(shared))}" if shared else "no seed yet"
            order = {s: _grid_order(settings[s][0], tune) for s in tried}
            for setting in sorted(tried, key=order.__getitem__):
                setting_jobs = tried[setting]
                missed, epochs = ranks[setting]
                done = [j for j in setting_jobs if j.status in ("finished", "failed")]
                if not done:
                    outcome = "no completed run on the selection seeds"
                else:
                    reached = len(done) - int(missed)
                    outcome = f"{epochs:.2f} epochs" if reached else "never reached"
                    outcome += f" ({reached}/{len(done)} reached, {on})"
                report.tuning.append((label, setting + (" (chosen)" if setting == best else ""), outcome))
        report.rows.append(Row(label, values, chosen, tuned, unbracketed, unchosen=why if tune and not tuned else None))

    wanted = {str(k): str(v).lower() for k, v in (ablation.get("baseline") or {}).items()}
    report.baseline = next(
        (r for r in report.rows if wanted and all(r.values.get(k, "").lower() == v for k, v in wanted.items())),
        report.rows[0],
    )
    references = ablation.get("references") or {}
    for row in report.rows:
        row.reference = references.get(row.label)
        row.epochs, row.seconds = mean([j.epochs for j in row.finished]), mean([j.seconds for j in row.finished])
        for metric in ERRORS:
            values = list(row.by_seed(metric).values())
            if values:
                row.stats[metric] = (
                    statistics.fmean(values),
                    statistics.stdev(values) if len(values) > 1 else math.nan,
                )
        measured = [j for j in row.finished if j.divisors]
        for layer in sorted({layer for j in measured for layer in j.divisors}):
            pairs = [j.divisors[layer] for j in measured if layer in j.divisors]
            row.lrn[layer] = (statistics.fmean(m for m, _ in pairs), statistics.fmean(p for _, p in pairs))
        row.lrn_from = sorted({j.divisors_from for j in measured})
        if row is not report.baseline:
            for metric in DIFFS:
                ours, theirs = row.by_seed(metric), report.baseline.by_seed(metric)
                if ours and theirs:
                    step = _error_step(row.finished + report.baseline.finished)
                    row.diffs[metric] = compare(ours, theirs, resolution=(step, step))
    report.checks = _checks(report)
    return report


def parse_claims(raw: Any) -> list[Claim]:
    """The ``claims`` of an experiment: a list of {dataset, metric, value, tolerance, source, text}. Sweeps made
    before claims carried their precision store {dataset: {top1: x, top5: y, speedup: z, text}}: their figures are
    read with a tolerance of zero and the source unknown."""
    if isinstance(raw, dict):
        raw = [
            {"dataset": dataset, "metric": metric, "value": value, "tolerance": 0.0, "source": "not recorded",
             "text": claim.get("text", "")}
            for dataset, claim in raw.items() if isinstance(claim, dict)
            for metric, value in claim.items() if metric in ("top1", "top5", "speedup")
        ]  # fmt: skip
    claims = []
    for item in raw or []:
        if not (isinstance(item, dict) and {"dataset", "metric", "value"} <= item.keys()):
            continue
        value, tolerance = item["value"], item.get("tolerance", 0.0)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) < 1e6
                      for v in (value, tolerance))  # fmt: skip
        ratio_ok = item["metric"] != "speedup" or (numbers and value > 0)  # a ratio is positive: its log is its scale
        if numbers and tolerance >= 0 and ratio_ok and item["metric"] in ("top1", "top5", "speedup"):
            claims.append(Claim(str(item["dataset"]), str(item["metric"]), float(value), float(tolerance),
                                str(item.get("source", "not recorded")), str(item.get("text", ""))))  # fmt: skip
    return claims


def _error_step(jobs: list[Job]) -> float:
    """One test image, in points of error: the finest difference a test error can show."""
    counts = [j.test_images for j in jobs if j.test_images]
    return 100.0 / min(counts) if counts else 0.0


def _milestone_resolution(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> tuple[float, float]:
    """How far the estimate, mean(log a) - mean(log b), can move when each run's epochs are known only to ± its own
    resolution (below, above): the worst case, run by run; lists of (epochs, resolution) of runs that reached."""

    def shift(runs: list[tuple[float, float]], sign: float) -> float:
        return statistics.fmean(math.log(max(e + sign * r, 1e-9) / e) for e, r in runs)

    return shift(b, 1.0) - shift(a, -1.0), shift(a, 1.0) - shift(b, -1.0)


def _checks(report: Report) -> list[Check]:
    """Each claim against each variant: those of this sweep's dataset, else (marked as such) those of another."""
    base = report.baseline
    if not report.claims or base is None:
        return []
    own = [c for c in report.claims if c.dataset == report.dataset]
    claims = own or report.claims
    checks = []
    for row in report.rows:
        if row is base:
            continue
        for claim in claims:
            if claim.metric in CLAIM_METRICS:
                metric = CLAIM_METRICS[claim.metric]
                if metric not in row.diffs:
                    continue
                interval = row.diffs[metric]
                what = f"{METRIC_NAMES[metric]}, variant - baseline (points)"
            elif claim.ratio and row.milestones and base.milestones:
                ours = [(j, m) for j in row.finished if (m := j.milestone_epochs) and m[0] > 0]
                theirs = [(j, m) for j in base.finished if (m := j.milestone_epochs) and m[0] > 0]
                if not (ours and theirs):
                    continue
                resolution = _milestone_resolution(  # over the runs that reached it (the others: no interval)
                    [(m[0], j.milestone_resolution) for j, m in ours if m[1]] or [(1.0, 0.0)],
                    [(m[0], j.milestone_resolution) for j, m in theirs if m[1]] or [(1.0, 0.0)],
                )
                interval = compare(
                    {j.seed: math.log(m[0]) for j, m in ours},
                    {j.seed: math.log(m[0]) for j, m in theirs},
                    resolution=resolution,
                    censored=(any(not m[1] for _, m in ours), any(not m[1] for _, m in theirs)),
                )
                what = "epochs to the milestone, variant / baseline"
            else:
                continue
            result = verdict(interval, claim)
            unbracketed = [r.unbracketed for r in (row, base) if r.unbracketed]
            if unbracketed:
                result = Verdict("not bracketed", f"not bracketed ({result.label} as it stands): " + "; ".join(
                    f"{r.label}'s fastest {r.unbracketed}" for r in (row, base) if r.unbracketed))  # fmt: skip
            elif report.small_budget:
                result = Verdict("not decided", f"not decided at the small budget ({result.label} here)")
            checks.append(Check(row.label, claim, what, interval, result, own_dataset=claim.dataset == report.dataset))
    return checks
