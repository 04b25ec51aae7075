"""A sweep's job dirs as the report reads them: each job's overrides, composed config and ``metrics.json``, and
its TensorBoard events for learning curves. Works on sweeps still running and on sweeps copied from elsewhere."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

MILESTONE = "milestone/epochs"


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
