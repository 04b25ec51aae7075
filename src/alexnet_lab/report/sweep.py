"""A sweep's job dirs as the report reads them: each job's overrides, composed config and ``metrics.json``, and
its TensorBoard events for learning curves. Works on sweeps still running and on sweeps copied from elsewhere."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from alexnet_lab import conf
from alexnet_lab.files import read_record, sha256

MILESTONE = "milestone/epochs"
log = logging.getLogger(__name__)
# what reading a file that alexnet-train did not write can raise
BAD_FILE = (OSError, ValueError, TypeError, AttributeError, KeyError, RecursionError, ArithmeticError,
            yaml.YAMLError, OmegaConfBaseException)  # fmt: skip
FILES = (".hydra/overrides.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml", "metrics.json")  # what a job dir gives


def _number(value: Any) -> float | None:
    """A finite number of a size a run could write, or None (a file from elsewhere may hold anything: a 400-digit
    integer, or 1e308s whose mean overflows)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return value if math.isfinite(value) and abs(value) < 1e15 else None
    except OverflowError:
        return None


EVENTS_CAP = 32 << 20  # bytes of TensorBoard events read per job: a 140-epoch CIFAR-10 run's take 0.45 MB, and
# TensorBoard parses about 3 MB/s here, so a job at the cap costs the report about 10 s


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
    experiment: str | None = None  # the experiment config it ran (Hydra's choice)
    test_images: int | None = None  # images in the test split it was tested on
    val_split: str | None = None  # what its val/* metrics were measured on (metrics.json's data.val_split)
    tested: str = ""  # which weights its test figures are of: "final", "chosen" (not its last.ckpt), "" unknown
    val_choices: tuple[str, ...] = ()  # what it chose on val/* or tested besides its final weights, in words
    milestone_resolution: float = 0.0  # epochs within which its milestone crossing is known (one batch, or window)
    subset: dict[str, Any] = field(default_factory=dict)  # trainer limits that made it see part of its data (debug)
    divisors: dict[str, tuple[float, float]] = field(default_factory=dict)  # LRN layer -> (median, p99) divisor
    divisors_from: str = ""  # the pass they were measured over

    def curve(self, metric: str) -> list[float]:
        """``metric`` per epoch from the job's own TensorBoard event files, oldest first (empty if it logged none).
        Links are not followed, and a job whose event files hold more than EVENTS_CAP bytes has no curve: its
        scalars take about 3 kB an epoch, so more is not a curve, and reading it would stall the report."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        files = sorted((p for p in self.path.glob("events.out.tfevents.*") if not p.is_symlink() and p.is_file()),
                       key=_numbers_as_numbers)  # fmt: skip
        size = sum(p.stat().st_size for p in files)
        if size > EVENTS_CAP:
            log.warning("%s: its TensorBoard events hold %d MiB, more than a run's curves; left out of the curves",
                        self.path, size >> 20)  # fmt: skip
            return []
        logging.getLogger("tensorboard").setLevel(logging.WARNING)  # not a line per event file it opens
        by_step: dict[int, float] = {}
        for path in files:  # by the time each was opened (then pid, count): a resumed run's file comes later
            events = EventAccumulator(str(path), size_guidance={"scalars": 0})
            events.Reload()
            if metric in events.Tags()["scalars"]:
                by_step |= {e.step: e.value for e in events.Scalars(metric)}  # a resumed run may log an epoch twice
        return [by_step[s] for s in sorted(by_step)]

    @property
    def number(self) -> int:
        """Its number in the sweep (the ``<n>_`` its dir name starts with; 0 if none)."""
        head = self.path.name.split("_", 1)[0]
        return int(head) if head.isdigit() else 0

    @property
    def milestone_epochs(self) -> tuple[float, bool] | None:
        """(epochs to the milestone, reached?): a finished run that never got there counts its epochs as a lower
        bound; None for unfinished runs."""
        if self.status != "finished":
            return None
        if MILESTONE in self.final:
            return self.final[MILESTONE], True
        return float(self.epochs or 0), False


def _numbers_as_numbers(path: Path) -> list[Any]:
    """An event file's sort key: its name (events.out.tfevents.<time>.<host>.<pid>.<count>) with each run of digits
    compared as a number, so count 10 follows count 9."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


_REFERENCE = re.compile(r"\$\{([\w.]+)\}")  # ${a.b.c}: another key of the same config, no resolver


def _load_config(path: Path) -> dict[str, Any]:
    """A job's composed config as saved, unresolved, except that in its ``ablation`` block and ``budget`` a value
    that is exactly a reference to another key of the same config (``${callbacks.milestone_stop.below}``) takes that
    key's plain value. Nothing else is resolved: a resolver in a file from elsewhere (``${oc.env:HOME}``) stays text."""
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)

    def plain(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: plain(v) for k, v in node.items()}
        if isinstance(node, list):
            return [plain(v) for v in node]
        if isinstance(node, str) and (ref := _REFERENCE.fullmatch(node)):
            target: Any = config
            for part in ref.group(1).split("."):
                target = target.get(part) if isinstance(target, dict) else None
            return (
                target if isinstance(target, (str, int, float, bool)) and not _REFERENCE.search(str(target)) else node
            )
        return node

    for key in ("ablation", "budget"):
        if config.get(key) is not None:
            config[key] = plain(config[key])
    return config


def _experiment(job: Path) -> str | None:
    """The experiment config a job ran, as Hydra recorded its choice (``.hydra/hydra.yaml``)."""
    path = job / ".hydra" / "hydra.yaml"
    if not path.is_file() or path.is_symlink():
        return None
    choice = plain_get(OmegaConf.to_container(OmegaConf.load(path), resolve=False), "hydra.runtime.choices.experiment")
    return choice if isinstance(choice, str) and re.fullmatch(r"[\w-]+", choice) else None


def plain_get(tree: Any, dotted: str) -> Any:
    """``tree["a"]["b"]...`` for ``"a.b..."`` in plain containers (nothing resolved), or None."""
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


CURRENT = ("claims", "references", "schedules")  # what the project's own experiment config says of the literature


def project_ablation(experiment: str) -> dict[str, Any]:
    """The claims, published references and schedules the project's own experiment config states today (empty if it
    has no such experiment): a sweep is judged against the literature as the project now reads it, whatever
    wording its jobs stored."""
    path = Path(conf.__file__).parent / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        return {}
    block = OmegaConf.select(OmegaConf.load(path), "ablation", default=None)
    if not OmegaConf.is_dict(block):
        return {}
    return {k: OmegaConf.to_container(block[k]) for k in CURRENT if k in block}


def _milestone_resolution(record: dict[str, Any], config: dict[str, Any]) -> float:
    """Epochs within which a run's milestone crossing is known: one batch (recorded since the milestone is read per
    batch), else, for runs made when it was checked once per window, that window in epochs."""
    final = record.get("final", {})
    if "milestone/resolution" in final:
        return float(final["milestone/resolution"])
    window = (config.get("callbacks") or {}).get("milestone_stop", {}).get("window_images")
    batch = (config.get("data") or {}).get("batch_size")
    steps, epochs = record.get("steps"), record.get("epochs")
    if all(isinstance(v, (int, float)) and v > 0 for v in (window, batch, steps, epochs)):
        return float(window) / (float(batch) * steps / epochs)
    return 0.0


def _tested(test_ckpt: Any) -> str:
    """Which weights a run's test figures are of, from metrics.json's ``test_ckpt``: "final" (that phrase, or its
    last.ckpt), "chosen" (another checkpoint: the one that did best on val/*), "" (not recorded)."""
    if not isinstance(test_ckpt, str):
        return ""
    return "final" if test_ckpt == "weights at the end of training" or test_ckpt.endswith("last.ckpt") else "chosen"


def _val_choices(config: dict[str, Any], test_ckpt: Any, epochs: Any, cap: Any) -> tuple[str, ...]:
    """What a run chose with its val/* figures (from its composed config: a callback that stopped on them, a learning
    rate that followed them) and whether it tested other weights than its final ones (metrics.json's test_ckpt)."""
    choices = []
    if _tested(test_ckpt) == "chosen":
        choices.append(f"tested {Path(str(test_ckpt)).name}, not its final weights")
    callbacks = config.get("callbacks") if isinstance(config.get("callbacks"), dict) else {}
    for key, node in callbacks.items():
        stops = isinstance(node, dict) and str(node.get("_target_", "")).endswith("EarlyStopping")
        ran_all = _number(epochs) is not None and _number(cap) is not None and epochs >= cap  # it never stopped
        if stops and str(node.get("monitor", "")).startswith("val/") and not ran_all:
            ran = f"ran {epochs} of {cap} epochs" if _number(epochs) is not None and _number(cap) else "epochs unknown"
            choices.append(f"could stop early on {node['monitor']} (callbacks.{key}; {ran})")
    scheduler = config.get("scheduler")
    if isinstance(scheduler, dict) and str(scheduler.get("_target_", "")).endswith("ReduceLROnPlateau"):
        choices.append("its learning rate followed val/top1_err (ReduceLROnPlateau)")
    return tuple(choices)


# where `alexnet-eval ckpt_path=<job>/checkpoints/last.ckpt hydra.run.dir=<job>/eval` writes its record
EVALUATED = "eval/metrics.json"
LAST = "checkpoints/last.ckpt"
MAX_HASHED = 8 << 30  # bytes: the largest last.ckpt the report hashes (ImageNet AlexNet with momentum: about 0.5 GB)


def _tested_these_bytes(evaluated: dict[str, Any], last: Path) -> bool:
    """Whether an eval record tested the bytes of ``last`` as they are now: same size (at most MAX_HASHED: the
    report hashes files from elsewhere), same SHA-256; never through a link."""
    digest, size = evaluated.get("ckpt_sha256"), evaluated.get("ckpt_bytes")
    if not (isinstance(digest, str) and isinstance(size, int) and not isinstance(size, bool) and size <= MAX_HASHED):
        return False
    try:
        if last.parent.is_symlink() or not last.is_file() or last.is_symlink() or last.lstat().st_size != size:
            return False
        return sha256(last) == digest
    except OSError as err:
        log.warning("%s is unreadable (%s); its eval record's LRN divisors are not shown", last, err)
        return False


def _divisors(path: Path, record: dict[str, Any]) -> tuple[dict[str, tuple[float, float]], str]:
    """What each response normalisation of a finished job divided by, (median, 99th percentile) per layer, and over
    which pass: an ``alexnet-eval`` of its final weights run into ``<job>/eval`` (measured on purpose, and by today's
    monitor: runs made before 2026-12-02 logged none under compile, or a fixed-stride sample), else its validation
    after the last epoch (``lrn/*``), else its test pass (``test/lrn/*``). Nothing if none of them has both figures
    of a layer. An eval record counts only if it tested the bytes of the job's ``last.ckpt`` as they are now (its
    ``ckpt_bytes`` and ``ckpt_sha256``): one that is a link, unreadable, partial, of other weights, or older than
    the job's last training (a job resumed or re-run in place) is passed over."""
    sources = []
    evaluated, last = path / EVALUATED, path / LAST
    try:
        other = None if evaluated.parent.is_symlink() else read_record(evaluated)  # None: none, a link, not JSON
        same_weights = (
            other is not None and record.get("status") == "finished" and other.get("status") == "finished"
            and not other.get("subset") and _tested_these_bytes(other, last)
        )  # fmt: skip
        if same_weights and isinstance(other.get("final"), dict):
            sources.append((other["final"], "test/lrn/", "the test images, its final weights (alexnet-eval)"))
    except BAD_FILE as err:
        log.warning("%s is unreadable (%s); its LRN divisors are not shown", evaluated, err)
    sources += [(record.get("final", {}), "lrn/", "the validation images after the last epoch"),
                (record.get("final", {}), "test/lrn/", "the test images, the weights tested")]  # fmt: skip
    for final, prefix, source in sources:
        layers = {k.removeprefix(prefix).split("/")[0] for k in final if k.startswith(prefix)}
        found = {
            layer: (final[f"{prefix}{layer}/divisor_median"], final[f"{prefix}{layer}/divisor_p99"])
            for layer in sorted(layers)
            if all(_number(final.get(f"{prefix}{layer}/divisor_{q}")) is not None for q in ("median", "p99"))
        }
        if found:
            return found, source
    return {}, ""


def _read_job(path: Path) -> Job:
    """One job dir as far as it can be read; a file that is not what alexnet-train writes makes the job
    ``unreadable`` (its row says which file), never the whole report fail."""
    overrides: dict[str, str] = {}
    if linked := [name for name in FILES if (path / name).is_symlink()]:
        return Job(path, overrides, "unreadable", error=f"{linked[0]} is a link (it could lead anywhere); not read")
    try:
        items = OmegaConf.load(path / ".hydra" / "overrides.yaml")
        if not OmegaConf.is_list(items):
            raise TypeError("not a list of overrides")
        for item in OmegaConf.to_container(items, resolve=False):  # as written: never resolved
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value
    except BAD_FILE as err:
        return Job(path, overrides, "unreadable", error=f".hydra/overrides.yaml: {type(err).__name__}: {err}")
    try:
        config_file = path / ".hydra" / "config.yaml"
        config = _load_config(config_file) if config_file.is_file() else {}
        experiment = _experiment(path)
    except BAD_FILE as err:
        return Job(path, overrides, "unreadable", error=f".hydra/config.yaml: {type(err).__name__}: {err}")
    try:
        record = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else {}
        if not isinstance(record, dict):
            raise TypeError(f"a JSON {type(record).__name__}, not an object")
        final = record.get("final", {})
        if not isinstance(final, dict) or any(_number(v) is None for v in final.values()):
            raise TypeError("its final metrics are not all finite numbers")
        data = record.get("data") if isinstance(record.get("data"), dict) else {}
        seed = record.get("seed", overrides.get("seed"))
        summary = record.get("config") if isinstance(record.get("config"), dict) else {}
        trainer = summary.get("trainer") if isinstance(summary.get("trainer"), dict) else {}
        divisors, divisors_from = _divisors(path, record)
        return Job(
            path=path,
            overrides=overrides,
            status=str(record.get("status", "pending")),
            error=None if record.get("error") is None else str(record["error"]),
            final=final,
            epochs=_number(record.get("epochs")),
            seconds=_number(record.get("seconds")),
            seed=seed if isinstance(seed, (int, str)) and not isinstance(seed, bool) else str(seed),
            config=config,
            max_epochs=_number(trainer.get("max_epochs")),
            experiment=experiment,
            test_images=data.get("test_images") if isinstance(data.get("test_images"), int) else None,
            val_split=str(data["val_split"]) if data.get("val_split") else None,
            tested=_tested(record.get("test_ckpt")),
            val_choices=_val_choices(config, record.get("test_ckpt"), record.get("epochs"), trainer.get("max_epochs")),
            milestone_resolution=_milestone_resolution(record, config),
            subset={str(k): v for k, v in record["subset"].items() if isinstance(v, (bool, int, float, str))}
            if isinstance(record.get("subset"), dict)
            else {},
            divisors=divisors,
            divisors_from=divisors_from,
        )
    except BAD_FILE as err:
        return Job(path, overrides, "unreadable", error=f"metrics.json: {type(err).__name__}: {err}", config=config)


def load_jobs(sweep: Path) -> list[Job]:
    """Every job dir of ``sweep`` (a folder with a ``.hydra/overrides.yaml``), in job-number order. A job dir, or its
    ``.hydra``, that is a link (it could lead outside the sweep) is skipped and logged, never read."""
    jobs = []
    root = sweep.resolve()
    for overrides_file in sorted(sweep.glob("*/.hydra/overrides.yaml")):
        path = overrides_file.parents[1]
        if path.is_symlink() or (path / ".hydra").is_symlink() or root not in path.resolve().parents:
            log.warning("skipped %s: a link, which could lead outside the sweep", path)
            continue
        jobs.append(_read_job(path))
    return sorted(jobs, key=lambda job: (job.number, job.path.name))


@dataclass
class Search:
    """A sweep that was an Optuna search: the figure its trials were ranked by, which way, and what it searched."""

    metric: str
    direction: str  # minimize | maximize
    params: list[str]  # the keys of hydra.sweeper.params: every trial sets them, equal or not
    config: str | None  # the hparams_search config it ran (Hydra's choice), which fixes the rest


def search_of(jobs: list[Job]) -> Search | None:
    """The Optuna search a sweep ran, as its first job's ``.hydra/hydra.yaml`` records the sweeper (Optuna's sweeper
    writes no ``multirun.yaml``), ranking by the job's ``optimized_metric``; read as data."""
    path = jobs[0].path / ".hydra" / "hydra.yaml" if jobs else None
    if path is None or not path.is_file() or path.is_symlink():
        return None
    try:
        hydra = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except BAD_FILE:
        return None
    sweeper, metric = plain_get(hydra, "hydra.sweeper"), jobs[0].config.get("optimized_metric")
    if (
        not isinstance(sweeper, dict)
        or "optuna" not in str(sweeper.get("_target_")).lower()
        or not isinstance(metric, str)
    ):
        return None
    direction = sweeper.get("direction")
    if isinstance(direction, list) and len(direction) == 1:  # a one-objective study may name its direction in a list
        direction = direction[0]
    params = sweeper.get("params") if isinstance(sweeper.get("params"), dict) else {}
    choice = plain_get(hydra, "hydra.runtime.choices.hparams_search")
    return Search(
        metric,
        "maximize" if str(direction).lower() in ("maximize", "studydirection.maximize") else "minimize",
        [str(k) for k in params if re.fullmatch(r"[\w.@/+~-]+", str(k))],
        choice if isinstance(choice, str) and re.fullmatch(r"[\w-]+", choice) else None,
    )


def variant_keys(sweep: Path, jobs: list[Job]) -> list[str]:
    """What the sweep varies, besides the seed: the swept keys named in ``multirun.yaml`` (sweeper params and
    command-line sweeps), else the override keys whose values differ between jobs."""
    keys: list[str] = []
    if (multirun := sweep / "multirun.yaml").is_file() and not multirun.is_symlink():
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        try:
            hydra_cfg = OmegaConf.to_container(OmegaConf.load(multirun), resolve=False).get("hydra") or {}
            params = plain_get(hydra_cfg, "sweeper.params")
            keys += [str(k) for k in params] if isinstance(params, dict) else []
            task = plain_get(hydra_cfg, "overrides.task")
            texts = [str(o) for o in task if "${" not in str(o)] if isinstance(task, list) else []
            parsed = OverridesParser.create().parse_overrides(texts)
            keys += [o.key_or_group for o in parsed if o.is_sweep_override() and o.key_or_group not in keys]
        except (*BAD_FILE, HydraException) as err:
            log.warning("%s is unreadable (%s); the variants are inferred from the jobs' overrides", multirun, err)
            keys = []
    if not keys:
        for job in jobs:
            keys += [k for k in job.overrides if k not in keys and len({j.overrides.get(k) for j in jobs}) > 1]
    return [k for k in keys if k != "seed"]
