"""The report's renderings: markdown (tables, tuning, LRN, the claims), CSV, the claims chart, learning curves and
a TensorBoard run. Every number comes computed from :mod:`alexnet_lab.report.analysis`."""

from __future__ import annotations

import csv
import math
import shutil
import statistics
from pathlib import Path

from alexnet_lab.report.analysis import DIFFS, ERRORS, Report
from alexnet_lab.stats import Interval


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
        label = row.label + "".join(f", {k}={v}" for k, v in row.tuned.items())
        cells = [
            label + (" (baseline)" if row is report.baseline else ""),
            f"{len(row.finished)} / {len(row.jobs)}",
            *(_pm(row.stats.get(m)) for m in ERRORS),
            *(_diff(row.diffs.get(m)) for m in DIFFS),
            "-" if row.epochs is None else f"{row.epochs:.1f}",
            "-" if row.seconds is None else f"{row.seconds:.0f}",
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
    diff_cols = [f"delta_{m}_{s}" for m in DIFFS for s in ("mean", "ci_low", "ci_high")]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "baseline", "finished", "started", *stat_cols, *diff_cols, "interval",
                         "epochs", "seconds", "verdicts"])  # fmt: skip
        for row in report.rows:
            stats = [x for m in ERRORS for x in row.stats.get(m, (math.nan, math.nan))]
            diffs = []
            for m in DIFFS:
                d = row.diffs.get(m)
                diffs += [d.estimate, d.low, d.high] if d else [math.nan] * 3
            method = next((d.method for d in row.diffs.values()), "")
            verdicts = "; ".join(f"{c.what}: {c.verdict.label}" for c in report.checks if c.variant == row.label)
            writer.writerow([row.label, row is report.baseline, len(row.finished), len(row.jobs), *stats, *diffs,
                             method, "" if row.epochs is None else row.epochs, "" if row.seconds is None else row.seconds, verdicts])  # fmt: skip


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
