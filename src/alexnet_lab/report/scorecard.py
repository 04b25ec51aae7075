"""One scorecard over several sweeps: every claim with its source and precision, the measured interval, n, budget
and verdict, as a markdown table and a chart. A folder given is a sweep (its job dirs are read), a report folder
(its ``report.json``, as ``alexnet-report`` wrote it), or a folder of either (``docs/results``, a multiruns dir)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet_lab.report.analysis import build_report
from alexnet_lab.report.render import Bar, _save, draw_bars, label, summary, text, write_text


@dataclass
class Entry:
    """One check of one sweep, as the scorecard shows it."""

    folder: Path
    sweep: dict[str, Any]
    check: dict[str, Any]

    def bounds(self) -> tuple[float, float]:
        def number(value: Any, default: float) -> float:
            if value in ("inf", "-inf"):
                return math.inf if value == "inf" else -math.inf
            return float(value) if isinstance(value, (int, float)) else default

        return number(self.check.get("low"), math.nan), number(self.check.get("high"), math.nan)


def _is_sweep(folder: Path) -> bool:
    return any(folder.glob("*/.hydra/overrides.yaml"))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_ok(check: Any) -> bool:
    """A check as the report writes it: a claim with numbers, an estimate, bounds that are numbers, inf or null."""
    if not isinstance(check, dict) or not isinstance(check.get("claim"), dict):
        return False
    claim = check["claim"]
    bounds_ok = all(_finite(check.get(k)) or check.get(k) in (None, "inf", "-inf") for k in ("low", "high"))
    sizes_ok = all(
        abs(check[k]) < 50 for k in ("estimate", "low", "high") if _finite(check.get(k))
    )  # exp() stays finite
    return (_finite(claim.get("value")) and _finite(claim.get("tolerance", 0.0)) and _finite(check.get("estimate"))
            and bounds_ok and sizes_ok and isinstance(check.get("n", 0), int))  # fmt: skip


def _read_summary(folder: Path) -> dict[str, Any] | None:
    """A report folder's ``report.json``, if it is one (checked to be what the report writes; malformed checks are
    left out)."""
    path = folder / "report.json"
    if path.is_symlink() or not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("checks"), list):
        return None
    return {**loaded, "checks": [c for c in loaded["checks"] if _check_ok(c)]}


def collect(paths: list[Path]) -> tuple[list[Entry], list[Path], list[Path]]:
    """Every check of every sweep under ``paths`` (one folder level deep); the sweeps that check no claim; and report
    folders without a ``report.json`` to read (made before it existed). Other folders are not sweeps: skipped."""
    entries, unclaimed, unreadable = [], [], []
    for path in paths:
        folders = [path] if _is_sweep(path) or (path / "report.md").is_file() else sorted(
            p for p in path.iterdir() if p.is_dir() and not p.is_symlink())  # fmt: skip
        for folder in folders:
            if _is_sweep(folder):
                found = summary(build_report(folder))
            elif (found := _read_summary(folder)) is None:
                if (folder / "report.md").is_file():
                    unreadable.append(folder)
                continue
            entries += [Entry(folder, found, check) for check in found["checks"]]
            if not found["checks"]:
                unclaimed.append(folder)
    return entries, unclaimed, unreadable


def _claim(check: dict[str, Any]) -> str:
    claim = check["claim"]
    unit = "x" if claim.get("metric") == "speedup" else " points"
    return (
        f"{claim.get('metric')} {claim.get('value'):g}{unit} ± {claim.get('tolerance', 0):g} ({claim.get('dataset')})"
    )


def to_markdown(entries: list[Entry], unclaimed: list[Path], unreadable: list[Path], out: Path) -> str:
    lines = [
        "| sweep | variant | source | claim ± its precision | measured (95 % interval) | n | budget | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        link = os.path.relpath(e.folder / "report.md", out)
        budget = e.sweep.get("budget") or "-"
        schedule = e.sweep.get("schedule")
        cells = [
            f"[{text(e.sweep.get('name', e.folder.name))}]({text(link)})",
            text(e.check.get("variant", "")),
            text(e.check["claim"].get("source", "")),
            text(_claim(e.check)),
            text(e.check.get("measured", "")),
            text(e.check.get("n", "")),
            text(f"{budget}: {schedule}" if schedule else budget),
            f"**{text(e.check.get('verdict', ''))}**",
        ]
        lines.append("| " + " | ".join(cells) + " |")

    def links(folders: list[Path]) -> str:
        return ", ".join(f"[{text(p.name)}]({text(os.path.relpath(p / 'report.md', out))})" for p in folders)

    if unclaimed:
        lines += ["", (f"Sweeps with no check yet (no claim with a figure, or no finished runs to compare): "
                  f"{links(unclaimed)}.")]  # fmt: skip
    if unreadable:
        lines += ["", f"Reports the scorecard cannot read (written before `report.json` existed): {links(unreadable)}."]
    return "\n".join(lines) + "\n"


def write_chart(entries: list[Entry], path: Path) -> None:
    """One row per check: the interval against the claim's band, differences and ratios in their own panels."""
    from matplotlib.figure import Figure

    panels = [
        (False, "variant − baseline (points of test error)"),
        (True, "variant / baseline (epochs to the milestone)"),
    ]
    panels = [(ratio, axis) for ratio, axis in panels if any(bool(e.check.get("ratio")) == ratio for e in entries)]
    counts = [sum(bool(e.check.get("ratio")) == ratio for e in entries) for ratio, _ in panels]
    fig = Figure(figsize=(10, 1.5 + 0.7 * sum(counts) + 0.9 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=counts)[:, 0]
    for ax, (ratio, axis) in zip(axes, panels):
        bars = []
        for e in (e for e in entries if bool(e.check.get("ratio")) == ratio):
            shown = math.exp if ratio else (lambda v: v)
            claim, (low, high) = e.check["claim"], e.bounds()
            value, tolerance = float(claim.get("value", math.nan)), float(claim.get("tolerance", 0.0))
            name = (f"{label(e.sweep.get('name'), 30)}: {label(e.check.get('variant'), 50)}\n"
                    f"{label(claim.get('metric'), 10)} ({label(claim.get('dataset'), 12)}): "
                    f"{label(e.check.get('verdict'), 20)}")  # fmt: skip
            estimate = float(e.check.get("estimate", math.nan))
            bars.append(
                Bar(name, shown(estimate), shown(low), shown(high), (value - tolerance, value + tolerance), value)
            )
        draw_bars(ax, bars, ratio, axis)
    axes[0].set_title("Every claim, measured (95 % intervals)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _save(fig, path)


def write_scorecard(paths: list[Path], out: Path) -> str:
    """scorecard.md and scorecard.png into ``out``; returns the markdown."""
    entries, unclaimed, unreadable = collect(paths)
    if not entries:
        raise FileNotFoundError(f"no checked claim in {', '.join(map(str, paths))}; give sweep or report folders")
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(entries, unclaimed, unreadable, out)
    write_text(out / "scorecard.md", "# Scorecard: every claim, measured\n\n" + markdown)
    write_chart(entries, out / "scorecard.png")
    return markdown
