"""The report's renderings: markdown (tables, tuning, LRN, the claims), CSV, JSON (what the scorecard reads), the
claims chart, learning curves and a TensorBoard run. Every number comes computed from
:mod:`alexnet_lab.report.analysis`; every text that came from a job dir is escaped before it is embedded."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet_lab.files import atomic_write, pictures_to_tensorboard
from alexnet_lab.report.analysis import DIFFS, ERRORS, Check, Report, Row
from alexnet_lab.stats import Interval

ERROR_NAMES = {"test/top1_err": "test top-1", "test/top5_err": "test top-5", "val/top1_err": "val top-1",
               "val/top5_err": "val top-5"}  # fmt: skip
CURVE_NAMES = {"train/top1_err": "training error", "val/top1_err": "validation error", "test/top1_err": "test error"}


def text(value: Any) -> str:
    """Text from a job dir, safe inside a markdown table cell or line: one line, no pipes, no HTML."""
    out = " ".join(str(value).split())
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("`", "'"), ("[", "\\["),
                      ("]", "\\]")):  # fmt: skip
        out = out.replace(raw, safe)
    return out


def label(value: Any, limit: int = 80) -> str:
    """Text from a job dir, safe as a chart label: one line, at most ``limit`` characters, ``$`` escaped (matplotlib
    would read what stands between two as math)."""
    out = " ".join(str(value).split()).replace("$", r"\$")
    return out if len(out) <= limit else out[: limit - 1] + "…"


def write_text(path: Path, content: str) -> None:
    """Written atomically and never through a link: a planted link to a file elsewhere is replaced, not followed."""
    atomic_write(path, lambda f: f.write(content.encode()))


def _pm(stat: tuple[float, float] | None) -> str:
    if stat is None:
        return "-"
    mean, std = stat
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _diff(interval: Interval | None) -> str:
    if interval is None:
        return "-"
    if not interval.decided:
        return f"{interval.estimate:+.2f} (no interval)"
    return f"{interval.estimate:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"


def _span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _budget_line(report: Report) -> list[str]:
    if report.budget is None:
        return []
    finished = [j for row in report.rows for j in row.finished] + [j for j in report.unchosen if j.status == "finished"]
    trained = [j.epochs for j in finished if j.epochs is not None] or [report.budget_epochs]
    epochs = f"{_span(trained)} epoch{'' if max(trained) == 1 else 's'} per run"
    schedule = f": {text(report.schedule)}" if report.schedule else ""
    limits = sorted({f"{k}={v}" for j in finished for k, v in j.subset.items()})
    part = f" **on part of the data** ({text(', '.join(limits))}: a debug run)" if limits else ""
    if report.small_budget:
        paper = (report.ablation.get("schedules") or {}).get(
            "paper"
        ) or f"{report.ablation['budgets'].get('paper')} epochs"
        return [
            (
                f"**Small budget{f' ({text(report.schedule)})' if report.schedule else ''}: this sweep cannot decide "
                f"the claims.** Its runs trained {epochs}"
                f"{part}; it tries the pipeline, and networks this early are far from converged. Run it with "
                f"`budget=paper` ({text(paper)}) to decide them."
            ),
            "",
        ]
    caps = [j.max_epochs for j in [*finished] if j.max_epochs is not None]
    cap = f"at most {_span(caps or [report.budget_epochs])} epochs"
    if caps and report.budget_epochs and min(caps) < report.budget_epochs:
        cap += f" (a run's own `trainer.max_epochs`; the budget sets {report.budget_epochs})"
    if mark := report.ablation.get("milestone"):
        stop = f"a run stops when {text(mark['metric'])} ≤ {text(mark['below'])}"
        return [f"Budget: {report.budget}{schedule} ({stop}, {cap}; finished runs trained {epochs}){part}.", ""]
    return [f"Budget: {report.budget}{schedule} ({epochs}; {cap} configured){part}.", ""]


def _milestone_cell(row: Row) -> str:
    reached = [m for m in row.milestones if m[1]]
    unreached = [m for m in row.milestones if not m[1]]
    if not row.milestones:
        return "-"
    if not reached:
        return f"not reached in {max(m[0] for m in unreached):g} ({len(unreached)} seeds)"
    cell = f"{statistics.fmean(m[0] for m in reached):.2f} ({len(reached)}/{len(row.milestones)} seeds)"
    if unreached:
        cell += f"; {len(unreached)} not in {max(m[0] for m in unreached):g}"
    return cell


def _stage_two(report: Report, row: Row) -> str:
    """The command that runs a tuned variant's chosen setting on the estimation seeds, into this sweep."""
    experiment = f"experiment={report.experiment} " if report.experiment else ""
    budget = f"budget={report.budget} " if report.budget else ""
    settings = " ".join(f"{k}={v}" for k, v in {**row.values, **row.tuned}.items())
    seeds = [s for s in range(1, 100) if str(s) not in report.selection_seeds][:5]  # never a selection seed
    return f"alexnet-train -m {experiment}{budget}{settings} seed={','.join(map(str, seeds))} hydra.sweep.dir={report.sweep}"


def _search(report: Report) -> list[str]:
    """An Optuna search's finished trials ranked by the figure it optimised, and what the best one's test error is."""
    if report.search is None:
        return []
    metric, sign = report.search.metric, -1.0 if report.search.direction == "maximize" else 1.0
    trials = [(job.final[metric], row, job) for row in report.rows for job in row.finished
              if isinstance(job.final.get(metric), (int, float)) and not math.isnan(job.final[metric])]  # fmt: skip
    trials.sort(key=lambda t: (sign * t[0], t[2].number))
    started = sum(len(row.jobs) for row in report.rows)

    def setting(value: str) -> str:
        try:
            return f"{float(value):.4g}"
        except ValueError:
            return value

    lines = [f"## The search: finished trials ranked by {text(metric)} ({report.search.direction})", ""]
    if not trials:
        return [*lines, f"No trial of the {started} started has finished with {text(metric)} yet.", ""]
    lines += [
        f"| rank | trial | {text(metric)} | val top-1 | test top-1 | epochs | settings |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, (value, row, job) in enumerate(trials, 1):
        settings = ", ".join(f"{k}={setting(str(v))}" for k, v in row.values.items())
        figures = [f"{job.final[m]:.2f}" if m in job.final else "-" for m in ("val/top1_err", "test/top1_err")]
        lines.append(f"| {number} | `{job.number}` | {value:.4g} | {' | '.join(figures)} | "
                     f"{job.epochs if job.epochs is not None else '-'} | {text(settings)} |")  # fmt: skip
    best, used = trials[0][2], {str(job.seed) for row in report.rows for job in row.jobs}
    seeds = ",".join([str(s) for s in range(1, 1000) if str(s) not in used][:5])  # none the search ran
    fixed = f"conf/hparams_search/{report.search.config}.yaml" if report.search.config else "the search's config"
    lines += [
        "",
        (
            f"{len(trials)} of {started} trials ranked. The best trial's test error is one run, chosen among "
            f"{len(trials)} on {text(metric)}: no interval, and the choice favours a lucky seed. For an estimate, "
            f"train its settings (every override in `{text(best.path.name)}/.hydra/overrides.yaml` but "
            f"hparams_search and seed, with what {text(fixed)} fixes outside `hydra:`, e.g. in an experiment "
            f"config) on seeds the search did not use, e.g. seed={seeds}."
        ),
        "",
    ]
    return lines


def val_is_test(report: Report) -> bool:
    """Whether the runs validated on the split they report as test (CIFAR-10 with data.val_size=0: every training
    image trains; ImageNet with data.minival_per_class=0: no minival held out)."""
    jobs = [j for row in report.rows for j in row.jobs]
    return bool(jobs) and all(validated_on_test(j) for j in jobs)


def validated_on_test(job: Any) -> bool:
    """Whether a run's val/* was the split it reports as test (metrics.json says it once the run finishes; before,
    its config does)."""
    data = job.config.get("data") if isinstance(job.config.get("data"), dict) else {}
    none_held = data.get("val_size") == 0 or data.get("minival_per_class") == 0
    return (job.val_split or ("test split" if none_held else "held out")).startswith(("test split", "the val split"))


def _per_seed(report: Report) -> list[str]:
    """Each finished run's test top-1 / top-5 error by seed, a column per variant, and each variant's Δ top-1 against
    the baseline run of the same seed: the pairs behind the table's means and intervals."""
    rows = [row for row in report.rows if row.by_seed("test/top1_err")]
    if not rows or report.tuning:
        return []
    seeds = sorted({s for row in rows for s in row.by_seed("test/top1_err")}, key=lambda s: (isinstance(s, str), s))
    base = report.baseline.by_seed("test/top1_err") if report.baseline and report.ablation else {}
    lines = ["", "Per seed, test top-1 / top-5 error (%) of each finished run (Δ top-1: minus the baseline's run of "
             "the same seed):" if base else "Per seed, test top-1 / top-5 error (%) of each finished run:", "",
             "| seed | " + " | ".join(text(row.label) for row in rows) + " |", "|" + "---|" * (len(rows) + 1)]  # fmt: skip
    for seed in seeds:
        cells = []
        for row in rows:
            top1, top5 = row.by_seed("test/top1_err").get(seed), row.by_seed("test/top5_err").get(seed)
            cell = "-" if top1 is None else f"{top1:.2f}" + ("" if top5 is None else f" / {top5:.2f}")
            if top1 is not None and row is not report.baseline and seed in base:
                cell += f" (Δ {top1 - base[seed]:+.2f})"
            cells.append(cell)
        lines.append(f"| {text(seed)} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(report: Report) -> str:
    name = text(report.ablation.get("name", report.sweep.name))
    base = text(report.baseline.label) if report.baseline else "-"
    methods = sorted({i.method for row in report.rows for i in row.diffs.values()} - {"one run a side"})
    # ImageNet runs validate on a minival and evaluate the ILSVRC-2012 val split once, in Lightning's test stage
    imagenet = report.dataset == "imagenet"
    test_split = "ILSVRC-2012 val split (test/*: evaluated once at the end)" if imagenet else "test split"
    on_test = val_is_test(report)  # val/* is the split reported as test
    if imagenet:
        val_split = "ILSVRC-2012 val split again (val/*: no minival held out)" if on_test else (
            "minival (val/*: held out of train)")  # fmt: skip
    else:
        val_split = "test split again (val/*: every training image trains)" if on_test else "validation split"
    title = f"# Ablation: {name}" if report.ablation else f"# Sweep: {name} (a plain multirun: no baseline or claim)"
    if report.search and not report.ablation:
        way = "maximising" if report.search.direction == "maximize" else "minimising"
        title = f"# Search: {name} (Optuna, {way} {text(report.search.metric)})"
    if report.small_budget:
        title += " (small budget: cannot decide the claims)"
    elif report.budget:
        title += f" ({report.budget} budget)"
    compared = (
        f" Δ is variant minus baseline ({base}) with a 95 % confidence interval ({' / '.join(methods) or 'none yet'}; "
        "paired when the variants ran the same seeds, which share data order and augmentation draws; never narrower "
        "than one test image): positive means the variant errs more."
    )
    if not report.ablation:
        compared = f" Δ is each row minus the first ({base}), as above." if len(report.rows) > 1 else ""
    if report.search:  # trials are ranked below, not compared
        compared = " Δ is each trial minus the first; the ranking below is what the search went by."
    finished = [j for row in report.rows for j in row.finished]
    validated = not finished or any("val/top1_err" in j.final for j in finished)  # none finished: not known yet
    chosen = [j for j in finished if j.val_choices and validated_on_test(j)]  # chose on the split they report
    # CIFAR-10 runs that chose nothing on it: val/* after the last epoch is the test figure itself, not shown twice
    twice = on_test and not imagenet and not chosen and all(j.tested == "final" for j in finished)
    on_val = f" and the {val_split} ({report.protocols.get('val', 'one view')})" if validated else (
        " (no validation pass: val/* is empty)")  # fmt: skip
    tested = report.protocols.get("test", "one view")
    if twice:
        on_val = ""
        tested += ("; val/* measures the same split: every training image trains, so the test split is only printed "
                   "during training, never used to choose, and not shown twice")  # fmt: skip
    errors = [m for m in ERRORS if not (twice and m.startswith("val/"))]
    lines = [
        title,
        "",
        *_budget_line(report),
        (
            f"Sweep `{text(report.sweep)}`; dataset {text(report.dataset)}. Errors in percent on the {test_split} "
            f"({tested}){on_val}, mean ± sample std over finished seeds.{compared}"
        ),
        "",
    ]
    if chosen:
        lines += [(f"**{len(chosen)} of {len(finished)} finished runs chose with val/*, which was the split they "
                   "report as test: their test errors are optimistic.** Run them again choosing nothing on it "
                   "(alexnet-train refuses these choices with data.val_size=0 since 2026-12-02) or with a held-out "
                   "split:"), ""]  # fmt: skip
        lines += [f"- `{text(j.path.name)}`: " + "; ".join(text(c) for c in j.val_choices) for j in chosen] + [""]
    lines += _search(report)
    mark = report.ablation.get("milestone")
    references = any(row.reference for row in report.rows)
    header = ["variant", "finished / started", *(ERROR_NAMES[m] for m in errors), "Δ test top-1", "Δ test top-5",
              "epochs", "time (s)"]  # fmt: skip
    if references:
        header.insert(3, "its published test top-1")
    if mark:
        header += [f"epochs to {text(mark['metric'])} ≤ {text(mark['below'])}"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report.rows:
        label = text(row.label + "".join(f", {k}={v}" for k, v in row.tuned.items()))
        cells = [
            label + (" (baseline)" if row is report.baseline and report.ablation else ""),
            f"{len(row.finished)} / {len(row.jobs)}",
            *(_pm(row.stats.get(m)) for m in errors),
            *(_diff(row.diffs.get(m)) for m in DIFFS),
            "-" if row.epochs is None else f"{row.epochs:.1f}",
            "-" if row.seconds is None else f"{row.seconds:.0f}",
        ]
        if references:
            ref = row.reference
            cells.insert(
                3, f"{ref['top1']:g} ± {ref.get('tolerance', 0):g} ({text(ref.get('source', ''))})" if ref else "-"
            )
        if mark:
            cells.append(_milestone_cell(row))
        lines.append("| " + " | ".join(cells) + " |")
    if references:
        lines += ["", ("Published figures are single runs on the original CIFAR-10; this copy is a JPEG re-encoding "
                  "(quality about 75), so absolute errors are expected a little higher; differences are comparable.")]  # fmt: skip
    lines += [] if report.search else _per_seed(report)  # a search's trials each ran their own seed
    if report.tuning:
        tune = ", ".join(f"`{k}`" for k in report.ablation["tune"])
        seeds = ", ".join(report.selection_seeds) or "none"
        lines += ["", (f"Each variant takes the setting of {tune} that reaches the milestone first on the selection "
                  f"seeds ({seeds}): a run that never reached it ranks behind every run that did. Selection seeds are "
                  "never part of the estimate above."), ""]  # fmt: skip
        lines += [f"- {text(variant)}: {text(setting)}: {outcome}" for variant, setting, outcome in report.tuning]
        for row in report.rows:
            if row.unbracketed:
                lines.append(f"- **{text(row.label)}: not bracketed.** Its fastest {text(row.unbracketed)} on the "
                             "selection seeds, and run the sweep again.")  # fmt: skip
            elif row.unchosen:
                lines.append(f"- **{text(row.label)}: no setting chosen**: {text(row.unchosen)}.")
            elif not row.jobs and row.tuned:
                lines.append(f"- {text(row.label)}: no estimation seeds yet; run `{text(_stage_two(report, row))}`")
    lrn_rows = [row for row in report.rows if row.lrn]
    if lrn_rows:
        lines += [
            "",
            "## Does LRN act?",
            "",
            (
                "What each response normalisation divides its input by (mean over the seeds measured; a divisor at "
                "its floor k^beta, 1.00 for k = 1 layers, does nothing):"
            ),
            "",
        ]
        for row in lrn_rows:
            layers = ", ".join(f"{layer} median {m:.3f}, 99th percentile {p:.3f}" for layer, (m, p) in row.lrn.items())
            measured = sum(1 for j in row.finished if j.divisors)
            over = f"{measured} of {len(row.finished)} finished seeds, over {'; '.join(row.lrn_from)}"
            lines.append(f"- {text(row.label)}: {text(layers)} ({text(over)})")
    if report.claims:
        lines += ["", "## The claims beside this sweep", ""]
        for claim in report.claims:
            tail = "" if claim.dataset == report.dataset else f"; {text(claim.dataset)}, not this dataset"
            lines.append(f"- {text(claim.source)} ({text(claim.metric)} {claim.shown}{tail}): {text(claim.text)}")
            for check in (c for c in report.checks if c.claim is claim):
                lines.append(f"  - {_check_line(check)}")
    if report.failed:
        lines += ["", "## Failed or unreadable jobs", ""]
        lines += [f"- `{text(job.path.name)}` ({job.status}): {text(job.error)}" for job in report.failed]
    unfinished = [j for row in report.rows for j in row.jobs if j.status not in ("finished", "failed", "unreadable")]
    if unfinished:
        lines += [
            "",
            f"Not finished yet: {', '.join(f'`{text(j.path.name)}` ({text(j.status)})' for j in unfinished)}.",
        ]
    return "\n".join(lines) + "\n"


def _check_line(check: Check) -> str:
    i = check.interval
    notes = "".join(f"; {note}" for note in i.notes)
    sentence = check.verdict.sentence
    return (
        f"**{text(check.variant)}: {check.verdict.label}.** {check.what}: measured {check.measured} ({i.method}, "
        f"n = {i.n}{notes}); claim {check.claim.shown}. {sentence[0].upper()}{sentence[1:]}."
    )


# ----------------------------------------------------------------------------------- csv, json, charts, tb


def write_csv(report: Report, path: Path) -> None:
    """One line per variant: counts, mean and std of each error, Δ with its interval, the verdicts."""
    stat_cols = [f"{m}_{s}" for m in ERRORS for s in ("mean", "std")]
    diff_cols = [f"delta_{m}_{s}" for m in DIFFS for s in ("mean", "ci_low", "ci_high")]
    out = io.StringIO(newline="")
    writer = csv.writer(out)
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
    write_text(path, out.getvalue())


def summary(report: Report) -> dict[str, Any]:
    """What the scorecard needs of a sweep, as plain values (``report.json``)."""

    def bound(value: float) -> float | str | None:
        return None if math.isnan(value) else (("inf" if value > 0 else "-inf") if math.isinf(value) else value)

    return {
        "name": report.ablation.get("name", report.sweep.name),
        "experiment": report.experiment,
        "dataset": report.dataset,
        "budget": report.budget,
        "schedule": report.schedule,
        "checks": [
            {
                "variant": c.variant,
                "claim": {
                    "dataset": c.claim.dataset,
                    "metric": c.claim.metric,
                    "value": c.claim.value,
                    "tolerance": c.claim.tolerance,
                    "source": c.claim.source,
                    "text": c.claim.text,
                },
                "what": c.what,
                "measured": c.measured,
                "estimate": c.interval.estimate,
                "low": bound(c.interval.low),
                "high": bound(c.interval.high),
                "ratio": c.ratio,
                "method": c.interval.method,
                "n": c.interval.n,
                "notes": list(c.interval.notes),
                "verdict": c.verdict.label,
                "sentence": c.verdict.sentence,
            }
            for c in report.checks
        ],
    }


def write_json(report: Report, path: Path) -> None:
    write_text(path, json.dumps(summary(report), indent=2) + "\n")


def _save(fig: Any, path: Path) -> None:
    """A figure saved atomically, never through a link."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def axis_name(check: Check, report: Report) -> str:
    """The claim's quantity in plain words: "tanh / relu, epochs to 25 % training error"."""
    if not check.ratio:
        return f"{check.what.split(',')[0]}, variant − baseline (points)"
    mark = report.ablation.get("milestone") or {}
    metric = CURVE_NAMES.get(str(mark.get("metric")), str(mark.get("metric", "the milestone")))
    variant = next(r for r in report.rows if r.label == check.variant)
    names = [label(",".join(r.values.values()) or r.label, 30) for r in (variant, report.baseline or variant)]
    below = f"{float(mark['below']):g}" if isinstance(mark.get("below"), (int, float)) else "?"
    return f"{names[0]} / {names[1]}, epochs to {below} % {metric}"


@dataclass(frozen=True)
class Bar:
    """One row of a claims chart, in display units (points, or a ratio): the measured interval (nan: none; infinite:
    open on that side) against the claim's band."""

    label: str
    estimate: float
    low: float
    high: float
    band: tuple[float, float]
    claim: float


def bar(check: Check, label: str) -> Bar:
    shown = math.exp if check.ratio else (lambda v: v)
    i, (low, high) = check.interval, check.claim.band
    return Bar(label, shown(i.estimate), shown(i.low), shown(i.high), (shown(low), shown(high)), check.claim.value)


def draw_bars(ax: Any, bars: list[Bar], ratio: bool, xlabel: str) -> None:
    """Each bar's interval (an arrow where it is open, "no interval" where there is none), its estimate, and the
    claim's band, top to bottom; a log axis for ratios, with plain tick labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    finite = [
        v
        for b in bars
        for v in (b.estimate, b.low, b.high, *b.band, b.claim)
        if math.isfinite(v) and v > (0 if ratio else -math.inf)
    ]
    lo, hi = min(finite + [1.0 if ratio else 0.0]), max(finite + [1.0 if ratio else 0.0])
    if ratio:
        pad = (hi / lo) ** 0.08
        left, right = lo / pad, hi * pad
    else:
        pad = 0.08 * (hi - lo or 1.0)
        left, right = lo - pad, hi + pad
    for y, b in enumerate(reversed(bars)):
        ax.fill_betweenx([y - 0.32, y + 0.32], max(b.band[0], left), min(b.band[1], right), color="tab:red",
                         alpha=0.18, label="claim ± its precision" if y == 0 else None)  # fmt: skip
        ax.plot([b.claim] * 2, [y - 0.32, y + 0.32], color="tab:red", linewidth=1)
        if math.isnan(b.low):
            ax.annotate("no interval (one run a side)", (b.estimate, y), xytext=(8, 6), textcoords="offset points",
                        fontsize="small", color="tab:blue")  # fmt: skip
        else:
            start, stop = max(b.low, left), min(b.high, right)
            ax.plot([start, stop], [y, y], color="tab:blue", linewidth=3, solid_capstyle="butt",
                    label="measured, 95 % interval" if y == 0 else None)  # fmt: skip
            if math.isinf(b.low):
                ax.plot([left], [y], "<", color="tab:blue", markersize=10)
            if math.isinf(b.high):
                ax.plot([right], [y], ">", color="tab:blue", markersize=10)
        ax.plot([b.estimate], [y], "o", color="tab:blue")
    ax.axvline(1.0 if ratio else 0.0, color="grey", linewidth=1, linestyle="--", label="no effect")
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.set_yticks(range(len(bars)), [b.label for b in reversed(bars)], fontsize="small")
    if ratio:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks([t for t in (0.5, 1, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 30, 50, 100) if left <= t <= right])
    ax.set_xlim(left, right)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def write_chart(report: Report, path: Path) -> None:
    """Each claim's measured difference (or ratio) with its 95 % interval, beside the claim's band: one row per claim
    and variant; a row without an interval says so. A sweep without claims shows each variant's mean test errors."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's matplotlib backend alone

    name = report.ablation.get("name", report.sweep.name)
    if not report.checks:
        labels = [label(row.label) for row in report.rows]
        fig = Figure(figsize=(max(6.0, 1.6 * len(labels) + 2), 4.2))
        ax = fig.subplots()
        for offset, metric in ((-0.19, "test/top1_err"), (0.19, "test/top5_err")):
            means = [row.stats.get(metric, (math.nan, math.nan))[0] for row in report.rows]
            stds = [
                0.0 if math.isnan(s) else s for s in (row.stats.get(metric, (0, math.nan))[1] for row in report.rows)
            ]
            legend = METRIC_LABELS[metric] + ", mean ± std over seeds"
            ax.bar([i + offset for i in range(len(labels))], means, 0.38, yerr=stds, capsize=4, label=legend)
        ax.set_xticks(range(len(labels)), labels, rotation=15, ha="right")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"Ablation: {label(name)} (no claim with a figure to check)")
        ax.legend(fontsize="small")
        fig.tight_layout()
        _save(fig, path)
        return
    kinds = sorted({c.ratio for c in report.checks})  # one panel per scale: differences, ratios
    counts = [sum(c.ratio == k for c in report.checks) for k in kinds]
    fig = Figure(figsize=(9, 1.5 + 0.8 * sum(counts) + 0.9 * len(kinds)))
    axes = fig.subplots(len(kinds), 1, squeeze=False, height_ratios=counts)[:, 0]
    for ax, ratio in zip(axes, kinds):
        checks = [c for c in report.checks if c.ratio == ratio]
        labels = [
            f"{label(c.variant)}\n{c.claim.metric} ({label(c.claim.dataset, 20)}): {c.verdict.label}" for c in checks
        ]
        draw_bars(ax, [bar(c, lab) for c, lab in zip(checks, labels)], ratio, axis_name(checks[0], report))
    budget = f", {report.budget} budget" if report.budget else ""
    axes[0].set_title(f"Ablation: {label(name)} ({label(report.dataset, 20)}{budget})")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    _save(fig, path)


METRIC_LABELS = {"test/top1_err": "test top-1 error", "test/top5_err": "test top-5 error"}


def curve_metric(report: Report) -> str:
    return report.ablation.get("curve", "val/top1_err")


def seeds_per_epoch(counts: list[int]) -> str:
    """How many seeds a mean curve averages, epoch by epoch: "3 seeds", or, while some runs are unfinished,
    "2 seeds to epoch 28, 1 to epoch 140"."""
    ends = [e for e in range(1, len(counts) + 1) if e == len(counts) or counts[e] != counts[e - 1]]
    if len(ends) == 1:
        return f"{counts[0]} seed{'s' if counts[0] > 1 else ''}"
    return ", ".join(f"{counts[e - 1]}{' seeds' if i == 0 else ''} to epoch {e}" for i, e in enumerate(ends))


ZOOM = 0.2  # the curves' right panel: the last fifth of the epochs, where the final errors are decided


def curves_figure(report: Report) -> Any:
    """``curve_metric`` per epoch: one line per variant (mean over its seeds), shaded from the lowest to the highest;
    on the right the last fifth of the epochs on a scale of their own, where variants a point apart look alike on
    the left."""
    from matplotlib.figure import Figure

    metric = curve_metric(report)
    series = []  # (legend, epochs, means, lows, highs) per variant
    for row in report.rows:
        curves = [c for j in row.jobs if (c := j.curve(metric))]
        if not curves:
            continue
        columns = [[c[e] for c in curves if e < len(c)] for e in range(max(len(c) for c in curves))]
        legend = f"{label(row.label)}: mean of {seeds_per_epoch([len(col) for col in columns])}"
        legend += ", shaded: their range" if len(curves) > 1 else ""
        series.append((legend, [statistics.fmean(col) for col in columns], [min(col) for col in columns],
                       [max(col) for col in columns]))  # fmt: skip
    length = max((len(means) for _, means, _, _ in series), default=0)
    first = math.floor(length * (1 - ZOOM))  # index of the zoom panel's first epoch
    zoomed = length >= 10
    fig = Figure(figsize=(10.5, 4.5) if zoomed else (7.5, 4.5))
    axes = fig.subplots(1, 2, width_ratios=[2.2, 1]) if zoomed else [fig.subplots()]
    for ax, start in zip(axes, (0, first), strict=False):
        for legend, means, lows, highs in series:
            epochs = list(range(start + 1, len(means) + 1))
            (line,) = ax.plot(epochs, means[start:], label=legend)
            ax.fill_between(epochs, lows[start:], highs[start:], color=line.get_color(), alpha=0.2)
        ax.set_xlabel("epoch")
    main = axes[0]
    mark = report.ablation.get("milestone")
    if mark and mark.get("metric") == metric:
        main.axhline(float(mark["below"]), color="grey", linestyle="--", linewidth=1)
        main.annotate(f"milestone: {float(mark['below']):g} %", (1, float(mark["below"])), xytext=(4, 4),
                      textcoords="offset points", fontsize="small", color="grey")  # fmt: skip
    name = CURVE_NAMES.get(metric, metric)
    if metric.startswith("val/") and val_is_test(report):
        name = "test error (printed during training)"
    main.set_ylabel(f"{name} (%)")
    main.set_title(f"Learning curves: {label(report.ablation.get('name', report.sweep.name))}")
    if zoomed:
        axes[1].set_title(f"epochs {first + 1}-{length}, zoomed", fontsize="medium")
    if main.lines:
        main.legend(fontsize="small")
    fig.tight_layout()
    return fig


def write_curves(report: Report, path: Path) -> None:
    """The learning curves (:func:`curves_figure`) as a PNG."""
    _save(curves_figure(report), path)


def write_tensorboard(markdown: str, folder: Path, charts: list[Path]) -> None:
    """The report as text and the charts as images (TEXT and IMAGES tabs); no scalars or HPARAMS sessions, so the
    report never shows up as an empty trial beside the training runs."""
    if folder.is_symlink():
        folder.unlink()  # a planted link: removed, never followed
    shutil.rmtree(folder, ignore_errors=True)  # regenerated from the run dirs each time
    pictures_to_tensorboard(folder, {f"report/{chart.stem}": chart for chart in charts}, {"report": markdown})
