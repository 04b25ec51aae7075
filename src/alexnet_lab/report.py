"""``alexnet-report <sweep dir>``: one table per ablation sweep, and a verdict on each of the paper's claims.

Reads run directories only (each job's ``.hydra/`` and ``metrics.json``, and its TensorBoard events for learning
curves), so it works on sweeps that are still running and on sweeps copied from another machine. Writes
``report.md``, ``report.csv``, ``report.png`` (each variant's difference from the baseline with its interval,
beside the paper's claim), ``curves.png`` (learning curves, mean and range over seeds) and a TensorBoard run
(``report/``) into the sweep dir. The statistics live in :mod:`alexnet_lab.stats`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from alexnet_lab.stats import Interval, Verdict, compare, verdict

log = logging.getLogger(__name__)

ERRORS = ("test/top1_err", "test/top5_err", "val/top1_err", "val/top5_err")
CLAIM_METRICS = {"top1": "test/top1_err", "top5": "test/top5_err"}  # a claim's keys and what they are measured on
METRIC_NAMES = {"test/top1_err": "test top-1 error", "test/top5_err": "test top-5 error"}
MILESTONE = "milestone/epochs"


# ---------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One job dir of a sweep, as far as it got."""

    path: Path
    overrides: dict[str, str]
    status: str  # finished | failed | interrupted | running | pending
    error: str | None = None
    final: dict[str, float] = field(default_factory=dict)
    epochs: int | None = None
    seconds: float | None = None
    seed: int | str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    max_epochs: int | None = None  # the epoch cap the run trained under (a resumed run may have changed it)

    def curve(self, metric: str) -> list[float]:
        """``metric`` per epoch from the job's TensorBoard events (empty if it logged none)."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        logging.getLogger("tensorboard").setLevel(logging.WARNING)  # not a line per event file it opens
        events = EventAccumulator(str(self.path), size_guidance={"scalars": 0})
        events.Reload()
        if metric not in events.Tags()["scalars"]:
            return []
        by_step = {e.step: e.value for e in events.Scalars(metric)}  # a resumed run may log an epoch twice
        return [by_step[s] for s in sorted(by_step)]

    @property
    def milestone_epochs(self) -> tuple[float, bool] | None:
        """(epochs to the milestone, reached?): a finished run that never got there counts its epochs as a lower
        bound; None for unfinished runs."""
        if self.status != "finished":
            return None
        if MILESTONE in self.final:
            return self.final[MILESTONE], True
        return float(self.epochs or 0), False


def _load_config(path: Path) -> dict[str, Any]:
    """A job's composed config as saved (unresolved: Hydra's resolvers are not there), with its ``ablation`` block
    and ``budget`` resolved (they refer to other keys of the same config, such as the milestone's callback)."""
    cfg = OmegaConf.load(path)
    config = OmegaConf.to_container(cfg, resolve=False)
    for key in ("ablation", "budget"):
        if cfg.get(key) is not None:
            config[key] = OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
    return config


def load_jobs(sweep: Path) -> list[Job]:
    """Every job dir under ``sweep`` (those with a ``.hydra/overrides.yaml``), in job-number order."""
    jobs = []
    for overrides_file in sweep.glob("*/.hydra/overrides.yaml"):
        path = overrides_file.parents[1]
        overrides = {}
        for item in OmegaConf.load(overrides_file):
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value
        config_file = path / ".hydra" / "config.yaml"
        config = _load_config(config_file) if config_file.exists() else {}
        record = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
        jobs.append(
            Job(
                path=path,
                overrides=overrides,
                status=record.get("status", "pending"),
                error=record.get("error"),
                final=record.get("final", {}),
                epochs=record.get("epochs"),
                seconds=record.get("seconds"),
                seed=record.get("seed", overrides.get("seed")),
                config=config,
                max_epochs=(record.get("config") or {}).get("trainer", {}).get("max_epochs"),
            )
        )

    def number(job: Job) -> int:
        head = job.path.name.split("_", 1)[0]
        return int(head) if head.isdigit() else 0

    return sorted(jobs, key=lambda job: (number(job), job.path.name))


def variant_keys(sweep: Path, jobs: list[Job]) -> list[str]:
    """What the sweep varies, besides the seed: the swept keys named in ``multirun.yaml`` (sweeper params and
    command-line sweeps), else the override keys whose values differ between jobs."""
    keys: list[str] = []
    if (multirun := sweep / "multirun.yaml").exists():
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra_cfg = OmegaConf.load(multirun).hydra
        keys += list(OmegaConf.select(hydra_cfg, "sweeper.params") or {})
        parsed = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
        keys += [o.key_or_group for o in parsed if o.is_sweep_override() and o.key_or_group not in keys]
    if not keys:
        for job in jobs:
            keys += [k for k in job.overrides if k not in keys and len({j.overrides.get(k) for j in jobs}) > 1]
    return [k for k in keys if k != "seed"]


# -------------------------------------------------------------------------------------------- report


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
                mean = _milestone_mean(setting_jobs)
                reached = sum(1 for j in setting_jobs if (m := j.milestone_epochs) and m[1])
                finished = sum(1 for j in setting_jobs if j.status == "finished")
                outcome = (
                    "no finished run" if math.isinf(mean) else f"{mean:.1f} epochs ({reached}/{finished} reached{on})"
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
            for metric in ("test/top1_err", "test/top5_err"):
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


# ------------------------------------------------------------------------------------------- markdown


def _pm(stat: tuple[float, float] | None) -> str:
    if stat is None:
        return "-"
    mean, std = stat
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _diff(interval: Interval | None) -> str:
    if interval is None:
        return "-"
    if not interval.decided:
        return f"{interval.estimate:+.2f}"
    return f"{interval.estimate:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"


def _mean(values: list[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _budget_line(report: Report) -> list[str]:
    if report.budget is None:
        return []
    paper = (report.ablation.get("budgets") or {}).get("paper")
    finished = [j for row in report.rows for j in row.finished]
    trained = [j.epochs for j in finished if j.epochs is not None] or [report.budget_epochs]
    epochs = f"{_span(trained)} epoch{'' if max(trained) == 1 else 's'} per run"
    if report.small_budget:
        return [
            (
                f"**Small budget ({epochs}): this sweep cannot decide the paper's claims.** "
                "It tries the pipeline; networks this early are far from the converged ones the paper compared. "
                f"Run it with `budget=paper` ({paper} epochs per run, the original schedule) to decide them."
            ),
            "",
        ]
    caps = [j.max_epochs for row in report.rows for j in row.jobs if j.max_epochs is not None]
    cap = f"at most {_span(caps or [report.budget_epochs])} epochs"
    if caps and min(caps) < report.budget_epochs:
        cap += f" (a run's own `trainer.max_epochs`; the budget sets {report.budget_epochs})"
    if mark := report.ablation.get("milestone"):
        stop = f"a run stops when {mark['metric']} ≤ {mark['below']:g}"
        return [f"Budget: {report.budget} ({stop}, {cap}; finished runs trained {epochs}).", ""]
    return [f"Budget: {report.budget} ({epochs}; {cap} configured).", ""]


def to_markdown(report: Report) -> str:
    name = report.ablation.get("name", report.sweep.name)
    base = report.baseline.label if report.baseline else "-"
    methods = sorted({i.method for row in report.rows for i in row.diffs.values()} - {"one run a side"})
    # ImageNet runs validate on a minival and evaluate the ILSVRC-2012 val split once, in Lightning's test stage
    imagenet = report.dataset == "imagenet"
    test_split = "ILSVRC-2012 val split (test/*: evaluated once at the end)" if imagenet else "test split"
    val_split = "minival (val/*: held out of train)" if imagenet else "validation split"
    title = f"# Ablation: {name}"
    if report.small_budget:
        title += " (small budget: cannot decide the paper's claims)"
    elif report.budget:
        title += f" ({report.budget} budget)"
    lines = [
        title,
        "",
        *_budget_line(report),
        (
            f"Sweep `{report.sweep}`; dataset {report.dataset}. Errors in percent on the {test_split} "
            f"({report.protocols.get('test', 'one view')}) and the {val_split} "
            f"({report.protocols.get('val', 'one view')}), mean ± sample std over finished seeds. Δ is variant minus "
            f"baseline ({base}) with a 95 % confidence interval ({' / '.join(methods) or 'none yet'}; paired when the "
            "variants ran the same seeds, which share data order and augmentation draws): positive means the variant "
            "errs more."
        ),
        "",
    ]
    mark = report.ablation.get("milestone")
    header = ["variant", "finished / started", "test top-1", "test top-5", "val top-1", "val top-5",
              "Δ test top-1", "Δ test top-5", "epochs", "time (s)"]  # fmt: skip
    if mark:
        header += [f"epochs to {mark['metric']} ≤ {mark['below']:g}"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report.rows:
        epochs, seconds = _mean([j.epochs for j in row.finished]), _mean([j.seconds for j in row.finished])
        label = row.label + "".join(f", {k}={v}" for k, v in row.tuned.items())
        cells = [
            label + (" (baseline)" if row is report.baseline else ""),
            f"{len(row.finished)} / {len(row.jobs)}",
            *(_pm(row.stats.get(m)) for m in ERRORS),
            *(_diff(row.diffs.get(m)) for m in ("test/top1_err", "test/top5_err")),
            "-" if epochs is None else f"{epochs:.1f}",
            "-" if seconds is None else f"{seconds:.0f}",
        ]
        if mark:
            reached = [m for m in row.milestones if m[1]]
            unreached = [m for m in row.milestones if not m[1]]
            if not row.milestones:
                cells.append("-")
            elif not reached:
                cells.append(f"not reached in {max(m[0] for m in unreached):g} ({len(unreached)} seeds)")
            else:
                text = f"{statistics.fmean(m[0] for m in reached):.1f} ({len(reached)}/{len(row.milestones)} seeds)"
                if unreached:
                    text += f"; {len(unreached)} not in {max(m[0] for m in unreached):g}"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    if report.tuning:
        lines += ["", "Each variant takes the setting of " + ", ".join(f"`{k}`" for k in report.ablation["tune"])
                  + " that reaches the milestone in the fewest epochs (mean over the seeds every setting ran; runs "
                  "that never reach it count their epochs):", ""]  # fmt: skip
        lines += [f"- {variant}: {setting}: {outcome}" for variant, setting, outcome in report.tuning]
    lrn_rows = [row for row in report.rows if row.lrn]
    if lrn_rows:
        lines += [
            "",
            "## Does LRN act?",
            "",
            (
                "What each response normalisation divides its input by, over the validation images after the last "
                "epoch (mean over seeds; 1.00 = does nothing, for k = 1 layers):"
            ),
            "",
        ]
        for row in lrn_rows:
            layers = ", ".join(f"{layer} median {m:.3f}, 99th percentile {p:.3f}" for layer, (m, p) in row.lrn.items())
            lines.append(f"- {row.label}: {layers}")
    claims = report.ablation.get("claims") or {}
    if claims:
        lines += ["", "## The paper's claims beside this sweep", ""]
        for dataset, claim in claims.items():
            tail = "" if dataset == report.dataset else ", not this dataset"
            lines.append(f"- Paper ({dataset}{tail}): {claim.get('text', '')}")
            for check in (c for c in report.checks if c.claim_dataset == dataset):
                where = "" if dataset == report.dataset else f" (its {dataset} figure)"
                lines.append(
                    f"  - **{check.variant}: {check.verdict.label}.** {check.what}: measured {check.measured} "
                    f"({check.interval.method}, n = {check.interval.n}); paper{where} {check.shown(check.claim)}. "
                    f"{check.verdict.sentence[0].upper()}{check.verdict.sentence[1:]}."
                )
    if report.failed:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- `{job.path.name}`: {job.error}" for job in report.failed]
    unfinished = [j for row in report.rows for j in row.jobs if j.status not in ("finished", "failed")]
    if unfinished:
        lines += ["", f"Not finished yet: {', '.join(f'`{j.path.name}` ({j.status})' for j in unfinished)}."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- csv, charts, tb


def write_csv(report: Report, path: Path) -> None:
    """One line per variant: counts, mean and std of each error, Δ with its interval, the verdicts."""
    stat_cols = [f"{m}_{s}" for m in ERRORS for s in ("mean", "std")]
    diff_cols = [f"delta_{m}_{s}" for m in ("test/top1_err", "test/top5_err") for s in ("mean", "ci_low", "ci_high")]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "baseline", "finished", "started", *stat_cols, *diff_cols, "interval",
                         "epochs", "seconds", "verdicts"])  # fmt: skip
        for row in report.rows:
            stats = [x for m in ERRORS for x in row.stats.get(m, (math.nan, math.nan))]
            diffs = []
            for m in ("test/top1_err", "test/top5_err"):
                d = row.diffs.get(m)
                diffs += [d.estimate, d.low, d.high] if d else [math.nan] * 3
            method = next((d.method for d in row.diffs.values()), "")
            epochs, seconds = _mean([j.epochs for j in row.finished]), _mean([j.seconds for j in row.finished])
            verdicts = "; ".join(f"{c.what}: {c.verdict.label}" for c in report.checks if c.variant == row.label)
            writer.writerow([row.label, row is report.baseline, len(row.finished), len(row.jobs), *stats, *diffs,
                             method, "" if epochs is None else epochs, "" if seconds is None else seconds, verdicts])  # fmt: skip


def write_chart(report: Report, path: Path) -> None:
    """Each claim's measured difference (or ratio) with its 95 % interval, beside the paper's figure: one row per
    claim and variant. A sweep without claims shows each variant's mean test errors instead."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's matplotlib backend alone

    name = report.ablation.get("name", report.sweep.name)
    if not report.checks:
        labels = [row.label for row in report.rows]
        fig = Figure(figsize=(max(5.0, 1.6 * len(labels) + 2), 4))
        ax = fig.subplots()
        for offset, metric in ((-0.19, "test/top1_err"), (0.19, "test/top5_err")):
            means = [row.stats.get(metric, (math.nan, math.nan))[0] for row in report.rows]
            stds = [
                0.0 if math.isnan(s) else s for s in (row.stats.get(metric, (0, math.nan))[1] for row in report.rows)
            ]
            ax.bar([i + offset for i in range(len(labels))], means, 0.38, yerr=stds, capsize=4, label=metric)
        ax.set_xticks(range(len(labels)), labels, rotation=15, ha="right")
        ax.set_ylabel("error (%), mean ± std over seeds")
        ax.set_title(f"Ablation: {name}")
        ax.legend()
    else:
        fig = Figure(figsize=(8, 1.2 + 0.9 * len(report.checks)))
        ax = fig.subplots()
        for y, check in enumerate(reversed(report.checks)):
            i = check.interval
            scale = math.exp if check.ratio else (lambda v: v)
            lo, hi = (scale(i.low), scale(i.high)) if i.decided else (scale(i.estimate),) * 2
            ax.plot([lo, hi], [y, y], color="tab:blue", linewidth=3, solid_capstyle="butt")
            ax.plot(
                [scale(i.estimate)], [y], "o", color="tab:blue", label="measured, 95 % interval" if y == 0 else None
            )
            ax.plot(
                [scale(check.claim)], [y], "x", color="tab:red", markersize=10, mew=2, label="paper" if y == 0 else None
            )
        ax.axvline(1.0 if report.checks[0].ratio else 0.0, color="grey", linewidth=1, linestyle="--")
        ax.set_yticks(range(len(report.checks)),
                      [f"{c.variant}\n{c.what.split(',')[0]}: {c.verdict.label}" for c in reversed(report.checks)])  # fmt: skip
        ax.set_xlabel("variant / baseline" if report.checks[0].ratio else "variant - baseline (points)")
        if report.checks[0].ratio:
            ax.set_xscale("log")
        budget = f", {report.budget} budget" if report.budget else ""
        ax.set_title(f"Ablation: {name} ({report.dataset}{budget})")
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def curve_metric(report: Report) -> str:
    return report.ablation.get("curve", "val/top1_err")


def write_curves(report: Report, path: Path) -> None:
    """``curve_metric`` per epoch: one line per variant (mean over its seeds), shaded from the lowest to the highest."""
    from matplotlib.figure import Figure

    metric = curve_metric(report)
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for row in report.rows:
        curves = [c for j in row.jobs if (c := j.curve(metric))]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        epochs = list(range(1, length + 1))
        columns = [[c[e] for c in curves if e < len(c)] for e in range(length)]
        means = [statistics.fmean(col) for col in columns]
        (line,) = ax.plot(epochs, means, label=f"{row.label} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
        ax.fill_between(epochs, [min(c) for c in columns], [max(c) for c in columns], color=line.get_color(), alpha=0.2)
    mark = report.ablation.get("milestone")
    if mark and mark.get("metric") == metric:
        ax.axhline(mark["below"], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (%): mean, range over seeds")
    ax.set_title(f"Learning curves: {report.ablation.get('name', report.sweep.name)}")
    if ax.lines:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_tensorboard(report: Report, markdown: str, folder: Path, charts: list[Path]) -> None:
    """The report as text, the charts as images, and each variant as one HPARAMS session with its mean errors."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    shutil.rmtree(folder, ignore_errors=True)  # regenerated from the run dirs each time
    with SummaryWriter(str(folder)) as writer:
        writer.add_text("report", markdown)
        for chart in charts:
            with Image.open(chart) as image:
                writer.add_image(f"report/{chart.stem}", np.asarray(image.convert("RGB")), 0, dataformats="HWC")
    for i, row in enumerate(report.rows):
        metrics = {f"mean/{m}": row.stats[m][0] for m in ERRORS if m in row.stats}
        if not metrics:
            continue
        with SummaryWriter(str(folder / f"{i}_{row.label}".replace("/", "-"))) as writer:
            params = {**row.values, **row.tuned, "variant": row.label, "seeds_finished": len(row.finished)}
            for summary in hparams(params, metrics):
                writer.file_writer.add_summary(summary)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, 0)


def write_report(sweep: Path) -> str:
    """Write report.md, report.csv, report.png, curves.png and report/ (TensorBoard) into ``sweep``."""
    report = build_report(sweep)
    markdown = to_markdown(report)
    (sweep / "report.md").write_text(markdown)
    write_csv(report, sweep / "report.csv")
    charts = [sweep / "report.png", sweep / "curves.png"]
    write_chart(report, charts[0])
    write_curves(report, charts[1])
    write_tensorboard(report, markdown, sweep / "report", charts)
    return markdown


class ReportCallback(Callback):
    """Writes the report at the end of every multirun; a failing report never fails the sweep."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            write_report(sweep)
            log.info("report: %s", sweep / "report.md")
        except Exception:
            log.exception("could not write the report of %s", sweep)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="alexnet-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a multirun dir, e.g. logs/train/multiruns/<time>_<random>")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        print(
            f"error: {args.sweep} is not a directory; give a multirun dir such as logs/train/multiruns/<run>",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        markdown = write_report(args.sweep)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(markdown, end="")
    print(f"\nwritten: {args.sweep}/report.md, report.csv, report.png, curves.png, report/ (TensorBoard)")


if __name__ == "__main__":
    main()
