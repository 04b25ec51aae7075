"""``alexnet-report <sweep dir>``: one table of top-1 / top-5 error per variant of a multirun.

Reads run directories only (each job's ``.hydra/`` and ``metrics.json``, and its TensorBoard events for
milestones), so it works on sweeps that are still running and on sweeps copied from another machine.
Writes ``report.md``, ``report.csv``, ``report.png`` and a TensorBoard run (``report/``) into the sweep dir.
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

log = logging.getLogger(__name__)

ERRORS = ("test/top1_err", "test/top5_err", "val/top1_err", "val/top5_err")
DIFFS = ("test/top1_err", "test/top5_err")


# ------------------------------------------------------------------------------------------ statistics


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection on its CDF; no SciPy needed)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:  # 1/2 + integral of the density from 0 to x (Simpson, in u = arctan(t))
        steps, upper = 2000, math.atan(x)
        h = upper / steps

        def f(u: float) -> float:
            t = math.tan(u)
            return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df)) / math.cos(u) ** 2

        total = f(0.0) + f(upper) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
        return 0.5 + total * h / 3

    lo, hi = (0.0, 1e3) if p > 0.5 else (-1e3, 0.0)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def welch_interval(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its Welch t confidence interval (nan bounds with fewer than two values a side)."""
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return diff, diff - half, diff + half


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
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> str | None:
        return self.overrides.get("seed")


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
        config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False) if config_file.exists() else {}
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
                config=config,
            )
        )
    number = lambda job: int(job.path.name.split("_", 1)[0]) if job.path.name.split("_", 1)[0].isdigit() else 0  # noqa: E731
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


def milestone(job: Job, metric: str, below: float) -> tuple[int | None, float | None]:
    """Epochs and seconds (since the run's first event) until ``metric`` first falls to ``below`` or less."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(job.path), size_guidance={"scalars": 0})
    acc.Reload()
    if metric not in acc.Tags()["scalars"]:
        return None, None
    for epoch, event in enumerate(acc.Scalars(metric), start=1):
        if event.value <= below:
            return epoch, event.wall_time - acc.FirstEventTimestamp()
    return None, None


# -------------------------------------------------------------------------------------------- report


@dataclass
class Row:
    """One variant: its values, counts, and statistics over finished seeds."""

    label: str
    values: dict[str, str]
    jobs: list[Job]
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    diffs: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    milestone: tuple[float, float] | None = None  # mean epochs, mean seconds (seeds that reached it)
    milestone_reached: int = 0

    @property
    def finished(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "finished"]


@dataclass
class Report:
    sweep: Path
    keys: list[str]
    rows: list[Row]
    baseline: Row | None
    dataset: str
    ablation: dict[str, Any]
    protocols: dict[str, str] = field(default_factory=dict)  # split -> evaluation views, e.g. test: 10-crop

    @property
    def failed(self) -> list[Job]:
        return [j for row in self.rows for j in row.jobs if j.status == "failed"]


def _dataset(config: dict[str, Any]) -> str:
    target = str(config.get("data", {}).get("_target_", ""))
    return target.rsplit(".", 1)[-1].removesuffix("DataModule").lower() or "unknown"


def _protocols(config: dict[str, Any]) -> dict[str, str]:
    """How each split was evaluated: ImageNet runs choose centre or 10-crop views, CIFAR-10 runs use one view."""
    data = config.get("data", {})
    views = {"center": "centre crop", "ten_crop": "10-crop, softmax averaged"}
    return {split: views.get(data.get(f"{split}_protocol"), "one view") for split in ("test", "val")}


def build_report(sweep: Path) -> Report:
    jobs = load_jobs(sweep)
    if not jobs:
        raise FileNotFoundError(f"no job dirs (with .hydra/overrides.yaml) under {sweep}; give a multirun dir")
    keys = variant_keys(sweep, jobs)
    rows: dict[str, Row] = {}
    for job in jobs:
        values = {k: job.overrides.get(k, "") for k in keys}
        label = ",".join(f"{k}={v}" for k, v in values.items()) or "all jobs"
        rows.setdefault(label, Row(label, values, [])).jobs.append(job)
    ablation = next((j.config.get("ablation") for j in jobs if j.config.get("ablation")), None) or {}
    wanted = {k: str(v).lower() for k, v in (ablation.get("baseline") or {}).items()}
    baseline = next(
        (r for r in rows.values() if wanted and all(r.values.get(k, "").lower() == v for k, v in wanted.items())), None
    )
    baseline = baseline or next(iter(rows.values()))
    mark = ablation.get("milestone")
    for row in rows.values():
        done = row.finished
        for metric in ERRORS:
            values = [j.final[metric] for j in done if metric in j.final]
            if values:
                row.stats[metric] = mean_std(values)
        if row is not baseline:
            for metric in DIFFS:
                ours = [j.final[metric] for j in done if metric in j.final]
                theirs = [j.final[metric] for j in baseline.finished if metric in j.final]
                if ours and theirs:
                    row.diffs[metric] = welch_interval(ours, theirs)
        if mark:
            reached = [m for m in (milestone(j, mark["metric"], mark["below"]) for j in done) if m[0] is not None]
            row.milestone_reached = len(reached)
            if reached:
                row.milestone = (statistics.fmean(m[0] for m in reached), statistics.fmean(m[1] for m in reached))
    dataset = _dataset(jobs[0].config)
    return Report(sweep, keys, list(rows.values()), baseline, dataset, ablation, _protocols(jobs[0].config))


def _pm(stat: tuple[float, float] | None) -> str:
    if stat is None:
        return "-"
    mean, std = stat
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _diff(d: tuple[float, float, float] | None) -> str:
    if d is None:
        return "-"
    diff, lo, hi = d
    return f"{diff:+.2f}" if math.isnan(lo) else f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _mean(values: list[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def to_markdown(report: Report) -> str:
    name = report.ablation.get("name", report.sweep.name)
    base = report.baseline.label if report.baseline else "-"
    lines = [
        f"# Ablation: {name}",
        "",
        f"Sweep `{report.sweep}`; dataset {report.dataset}. Errors in percent on the test split "
        f"({report.protocols.get('test', 'one view')}) and the validation split ({report.protocols.get('val', 'one view')}), "
        f"mean ± sample std over finished seeds. Δ is variant minus baseline ({base}) with a 95 % Welch "
        "confidence interval: positive means the variant errs more.",
        "",
    ]
    mark = report.ablation.get("milestone")
    header = [
        "variant",
        "finished / started",
        "test top-1",
        "test top-5",
        "val top-1",
        "val top-5",
        "Δ test top-1",
        "Δ test top-5",
        "epochs",
        "time (s)",
    ]
    if mark:
        header += [f"epochs to {mark['metric']} ≤ {mark['below']:g}", "seconds to it"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report.rows:
        epochs, seconds = _mean([j.epochs for j in row.finished]), _mean([j.seconds for j in row.finished])
        cells = [
            row.label + (" (baseline)" if row is report.baseline else ""),
            f"{len(row.finished)} / {len(row.jobs)}",
            *(_pm(row.stats.get(m)) for m in ERRORS),
            *(_diff(row.diffs.get(m)) for m in DIFFS),
            "-" if epochs is None else f"{epochs:.1f}",
            "-" if seconds is None else f"{seconds:.0f}",
        ]
        if mark:
            reached = f" ({row.milestone_reached}/{len(row.finished)} seeds)"
            cells += ["not reached" if row.milestone is None else f"{row.milestone[0]:.1f}{reached}",
                      "-" if row.milestone is None else f"{row.milestone[1]:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    claim = (report.ablation.get("claims") or {}).get(report.dataset)
    other = {k: v for k, v in (report.ablation.get("claims") or {}).items() if k != report.dataset}
    if claim or other:
        lines += ["", "## The paper's claim beside this sweep", ""]
    if claim:
        lines.append(f"- Paper ({report.dataset}): {claim.get('text', '')}")
        for row in report.rows:
            if row is report.baseline:
                continue
            for metric, key in (("test/top1_err", "top1"), ("test/top5_err", "top5")):
                if key in claim and metric in row.diffs:
                    lines.append(
                        f"  - {row.label}: Δ {metric} measured {_diff(row.diffs[metric])}, paper {claim[key]:+.1f}"
                    )
            if "speedup" in claim and row.milestone and report.baseline and report.baseline.milestone:
                ratio = row.milestone[0] / report.baseline.milestone[0]
                lines.append(
                    f"  - {row.label}: {ratio:.1f}x the baseline's epochs to the milestone, paper {claim['speedup']:g}x"
                )
    for dataset, other_claim in other.items():
        lines.append(f"- Paper ({dataset}, not this dataset): {other_claim.get('text', '')}")
    if report.failed:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- `{job.path.name}`: {job.error}" for job in report.failed]
    unfinished = [j for row in report.rows for j in row.jobs if j.status not in ("finished", "failed")]
    if unfinished:
        lines += ["", f"Not finished yet: {', '.join(f'`{j.path.name}` ({j.status})' for j in unfinished)}."]
    return "\n".join(lines) + "\n"


def write_csv(report: Report, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "baseline", "finished", "started", *[f"{m}_{s}" for m in ERRORS for s in ("mean", "std")],
                         *[f"delta_{m}_{s}" for m in DIFFS for s in ("mean", "ci_low", "ci_high")], "epochs", "seconds"])  # fmt: skip
        for row in report.rows:
            stats = [x for m in ERRORS for x in row.stats.get(m, (math.nan, math.nan))]
            diffs = [x for m in DIFFS for x in row.diffs.get(m, (math.nan, math.nan, math.nan))]
            epochs, seconds = _mean([j.epochs for j in row.finished]), _mean([j.seconds for j in row.finished])
            writer.writerow([row.label, row is report.baseline, len(row.finished), len(row.jobs), *stats, *diffs,
                             "" if epochs is None else epochs, "" if seconds is None else seconds])  # fmt: skip


def write_chart(report: Report, path: Path) -> None:
    """Bars of mean test top-1 / top-5 error per variant, with the std over seeds as error bars."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's matplotlib backend alone

    labels = [row.label for row in report.rows]
    fig = Figure(figsize=(max(5.0, 1.6 * len(labels) + 2), 4))
    ax = fig.subplots()
    width = 0.38
    for offset, metric, name in (
        (-width / 2, "test/top1_err", "test top-1"),
        (width / 2, "test/top5_err", "test top-5"),
    ):
        means = [row.stats.get(metric, (math.nan, math.nan))[0] for row in report.rows]
        stds = [
            0.0 if math.isnan(s) else s for s in (row.stats.get(metric, (math.nan, math.nan))[1] for row in report.rows)
        ]
        ax.bar([i + offset for i in range(len(labels))], means, width, yerr=stds, capsize=4, label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=15, ha="right")
    ax.set_ylabel("error (%), mean ± std over seeds")
    ax.set_title(f"Ablation: {report.ablation.get('name', report.sweep.name)}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_tensorboard(report: Report, markdown: str, folder: Path) -> None:
    """The report as text, and each variant as one HPARAMS session with its mean errors."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    shutil.rmtree(folder, ignore_errors=True)  # regenerated from the run dirs each time
    with SummaryWriter(str(folder)) as writer:
        writer.add_text("report", markdown)
    for i, row in enumerate(report.rows):
        metrics = {f"mean/{m}": row.stats[m][0] for m in ERRORS if m in row.stats}
        if not metrics:
            continue
        with SummaryWriter(str(folder / f"{i}_{row.label}".replace("/", "-"))) as writer:
            params = {**row.values, "variant": row.label, "seeds_finished": len(row.finished)}
            for summary in hparams(params, metrics):
                writer.file_writer.add_summary(summary)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, 0)


def write_report(sweep: Path) -> str:
    """Write report.md, report.csv, report.png and report/ (TensorBoard) into ``sweep``; return the markdown."""
    report = build_report(sweep)
    markdown = to_markdown(report)
    (sweep / "report.md").write_text(markdown)
    write_csv(report, sweep / "report.csv")
    write_chart(report, sweep / "report.png")
    write_tensorboard(report, markdown, sweep / "report")
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
    print(f"\nwritten: {args.sweep}/report.md, report.csv, report.png, report/ (TensorBoard)")


if __name__ == "__main__":
    main()
