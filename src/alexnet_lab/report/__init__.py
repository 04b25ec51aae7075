"""``alexnet-report <sweep dir>``: one table per ablation sweep, and a verdict on each of the paper's claims.

Reads run directories only (each job's ``.hydra/`` and ``metrics.json``, and its TensorBoard events for learning
curves), so it works on sweeps that are still running and on sweeps copied from another machine. Writes
``report.md``, ``report.csv``, ``report.png`` (each variant's difference from the baseline with its interval,
beside the paper's claim), ``curves.png`` (learning curves, mean and range over seeds) and a TensorBoard run
(``report/``) into the sweep dir. ``sweep`` reads the job dirs, ``analysis`` computes (with :mod:`alexnet_lab.stats`),
``render`` writes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from alexnet_lab.report.analysis import Report, build_report
from alexnet_lab.report.render import to_markdown, write_chart, write_csv, write_curves, write_tensorboard

__all__ = [
    "Report",
    "ReportCallback",
    "build_report",
    "main",
    "to_markdown",
    "write_chart",
    "write_curves",
    "write_report",
]

log = logging.getLogger(__name__)


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
