"""``alexnet-report <sweep dir>``: one table per ablation sweep, and a verdict on each claim it tests;
``alexnet-report --scorecard <out> <folders>``: one table and chart of every claim over several sweeps.

Reads run directories only (each job's ``.hydra/`` and ``metrics.json``, and its TensorBoard events for learning
curves), so it works on sweeps that are still running and on sweeps copied from another machine; it never resolves
an interpolation or follows a link it finds there. Writes ``report.md``, ``report.csv``, ``report.json`` (what the
scorecard reads), ``report.png`` (each variant's difference from the baseline with its interval, beside the claim's
band), ``curves.png`` (learning curves, mean and range over seeds) and a TensorBoard run (``report/``) into the sweep
dir, each atomically and never through a link. ``sweep`` reads the job dirs, ``analysis`` computes (with
:mod:`alexnet_lab.stats`), ``render`` writes, ``scorecard`` gathers sweeps.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from alexnet_lab.report.analysis import Report, build_report
from alexnet_lab.report.render import (
    to_markdown,
    write_chart,
    write_csv,
    write_curves,
    write_json,
    write_tensorboard,
    write_text,
)
from alexnet_lab.report.scorecard import write_scorecard

__all__ = [
    "Report",
    "ReportCallback",
    "build_report",
    "main",
    "to_markdown",
    "write_chart",
    "write_curves",
    "write_report",
    "write_scorecard",
]

log = logging.getLogger(__name__)


def write_report(sweep: Path) -> str:
    """Write report.md, report.csv, report.json, report.png, curves.png and report/ (TensorBoard) into ``sweep``."""
    report = build_report(sweep)
    markdown = to_markdown(report)
    write_text(sweep / "report.md", markdown)
    write_csv(report, sweep / "report.csv")
    write_json(report, sweep / "report.json")
    charts = [sweep / "report.png", sweep / "curves.png"]
    write_chart(report, charts[0])
    write_curves(report, charts[1])
    write_tensorboard(markdown, sweep / "report", charts)
    return markdown


class ReportCallback(Callback):
    """Writes the report at the end of every multirun; a failing report never fails the sweep.

    An Optuna search whose every trial failed never gets to its end (the sweeper asks Optuna for the best trial,
    which raises): after its last trial the report is written and the search ends in one ``error:`` line, exit 2.
    Counted where the trials run in this process (the basic launcher) and the study is new (in memory)."""

    def __init__(self) -> None:
        self.trials = self.failed = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.trials = self.failed = 0

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra = config.hydra
        if (
            hydra.mode != RunMode.MULTIRUN
            or "optuna" not in str(hydra.sweeper.get("_target_", "")).lower()
            or not str(hydra.launcher.get("_target_", "")).endswith("BasicLauncher")
            or hydra.sweeper.get("storage") is not None
        ):
            return
        self.trials += 1
        self.failed += job_return.status == JobStatus.FAILED
        if self.trials == hydra.sweeper.get("n_trials") and self.failed == self.trials:
            self.on_multirun_end(config)
            print(f"error: every trial of the Optuna search failed ({self.trials} of {self.trials}); why, per trial: "
                  f"{Path(hydra.sweep.dir) / 'report.md'}", file=sys.stderr)  # fmt: skip
            sys.exit(2)  # not an Exception: it passes Hydra's handler, which would print a traceback

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            write_report(sweep)
            log.info("report: %s", sweep / "report.md")
        except Exception:
            log.exception("could not write the report of %s", sweep)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="alexnet-report", description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="a multirun dir, e.g. logs/train/multiruns/<run>; "
                        "with --scorecard, any number of sweep or report folders, or folders of them")  # fmt: skip
    parser.add_argument("--scorecard", type=Path, metavar="OUT", help="write scorecard.md and scorecard.png into OUT")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir():
            print(f"error: {folder} is not a directory; give a multirun dir such as logs/train/multiruns/<run>",
                  file=sys.stderr)  # fmt: skip
            sys.exit(2)
    try:
        if args.scorecard is not None:
            markdown = write_scorecard(args.folders, args.scorecard)
            written = f"{args.scorecard}/scorecard.md, scorecard.png"
        elif len(args.folders) > 1:
            parser.error("one sweep at a time; several folders need --scorecard OUT")
        else:
            markdown = write_report(args.folders[0])
            written = (
                f"{args.folders[0]}/report.md, report.csv, report.json, report.png, curves.png, report/ (TensorBoard)"
            )
    except (FileNotFoundError, NotADirectoryError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(markdown, end="")
    print(f"\nwritten: {written}")


if __name__ == "__main__":
    main()
