"""A run's life on disk: its dir and lock, its ``metrics.json`` through its states, and what a start does with an
earlier attempt.

A run dir is ``logs/<task>/runs/<time>_<random>[_<name>]`` or a sweep's job dir. Its ``metrics.json`` goes
``running`` -> ``finished`` | ``interrupted`` (SIGTERM: ``last.ckpt`` saved) | ``failed`` (:mod:`errors`). Started
again (``ckpt_path=last``, or the same multirun with its ``hydra.sweep.dir``), a run resumes from its newest
checkpoint; a sweep keeps a finished job whose config is unchanged and runs a failed one again from the start.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from alexnet_lab.checkpointing import INTERRUPTED_EXIT_CODE, newest_checkpoint
from alexnet_lab.errors import ConfigError, JobBusy
from alexnet_lab.files import read_record, write_json
from alexnet_lab.trust import check_config, check_overrides

log = logging.getLogger(__name__)


def _rank() -> int:
    """This process's rank under SLURM or torchrun (0 otherwise)."""
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")) or 0)


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` (an fcntl lock, released when the process ends, however it ends) while a job runs in
    a dir that another process may also start: a second one is refused with :class:`JobBusy` and touches nothing.
    Under SLURM every task runs the entry point; only the first takes the lock."""
    if _rank() != 0:
        yield
        return
    try:
        fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        raise ConfigError(
            f"cannot lock {run_dir / '.lock'} ({err.strerror}); it must be a plain file: remove it"
        ) from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise JobBusy(f"{run_dir} is being run by another process (pid {holder}); it is left to that one") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- run ids and run dirs


_run_id: str | None = None


def run_id() -> str:
    """One id per command, decided on first use: a timestamp plus random hex, so two runs started in the same
    second never share a dir. Worker processes of that command (joblib launcher, spawned DDP) adopt their
    parent's id through the environment (see :func:`share_run_id`)."""
    global _run_id
    if _run_id is None:
        parent, _, shared = os.environ.get("ALEXNET_RUN_ID", "").partition(":")
        _run_id = (
            shared if parent == str(os.getppid()) else f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
        )
    return _run_id


def share_run_id() -> None:
    """Called by the console scripts: lets this command's worker processes resolve the same run dirs."""
    os.environ["ALEXNET_RUN_ID"] = f"{os.getpid()}:{run_id()}"


def newest_run(runs: Path, name: str) -> Path | None:
    """The most recent run dir called ``<time>_<random>_<name>`` under ``runs`` (names sort by start time)."""
    found = sorted(
        p for p in runs.glob(f"*_{name}") if re.fullmatch(rf"[\d-]+_[\d-]+_[0-9a-f]{{6}}_{re.escape(name)}", p.name)
    )
    return found[-1] if found else None


def override(key: str, value: Any) -> str:
    """``key=value`` as a command-line argument to paste: a value with characters Hydra's override grammar reserves
    (a sweep job's dir holds ``=`` and ``,``) is quoted for Hydra, and the whole for the shell."""
    text = f"{key}={value}"
    if re.fullmatch(r"[\w./:~+@-]*", str(value)):
        return text
    return shlex.quote(f'{key}="{value}"')


def run_dir_for(runs: str, name: str | None, ckpt_path: str | None, run_dir: str | None) -> str:
    """A new run dir (``<time>_<random>[_<name>]``), or with ``ckpt_path=last`` the run being resumed (a resolver: it
    only computes the name)."""
    if ckpt_path == "last":
        if run_dir:
            return str(Path(run_dir).expanduser().resolve())
        if name and (found := newest_run(Path(runs), name)):
            return str(found)
    return f"{runs}/{run_id()}" + (f"_{name}" if name else "")


LINKLESS = (
    ".hydra",
    "checkpoints",
    "csv",
    "wandb",
    "train.log",
    "eval.log",
    "predict.log",
    ".lock",
    "hparams.yaml",  # TensorBoardLogger's, written through a link at its name
)  # written in a run dir


def hydra_subdir_for(ckpt_path: str | None, output_dir: str | None = None) -> str:
    """Where Hydra saves the composed config: a resumed run, or a sweep job started again in a dir that already
    holds a run, keeps its original .hydra/ as it was and adds a subfolder. (A resolver: it only computes a name;
    :class:`RunDirGuard` checks the dir before anything is written.)"""
    if ckpt_path == "last":
        return f".hydra/resume_{run_id()}"
    if output_dir and (Path(output_dir) / "metrics.json").exists():
        return f".hydra/rerun_{run_id()}"
    return ".hydra"


class RunDirGuard(Callback):
    """Hydra callback: before Hydra writes a run's or a sweep's first file, the folder it writes to can be written
    and holds no link where a run writes (a run dir is written only in place). One ``error:`` line and exit 2
    otherwise; the resolvers that name these dirs only compute names."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(str(config.hydra.run.dir))
        resuming = OmegaConf.select(config, "ckpt_path") == "last"
        _check_writable(run_dir if resuming and run_dir.is_dir() else run_dir.parent)
        _check_links(run_dir)
        if resuming and _rank() == 0:  # a resume of a run another process still runs (ranks > 0 join rank 0's)
            _check_free(run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # here, once, before any job (in a job it would only fail that trial), unless a swept value decides it
            if not _sweeps_what_the_check_reads(config, CHECKED):
                check_nothing_chosen_on_test(config, searching=optuna_sweeper(config.hydra))
            if optuna_sweeper(config.hydra) and not _sweeps_what_the_check_reads(config, SEARCH_CHECKED):
                check_search_metric(config)
        except ConfigError as err:
            _refuse(str(err))
        sweep = Path(str(config.hydra.sweep.dir))  # may itself be a link (a sweep kept on scratch): its jobs may not
        _check_writable(sweep.parent)
        print(f"sweep dir: {sweep} (alexnet-report {sweep} when it is done)", flush=True)
        for job in sorted(sweep.iterdir()) if sweep.is_dir() else []:
            if job.is_dir() or job.is_symlink():  # a job dir of an earlier start of the same sweep
                _check_links(job)


def optuna_sweeper(hydra_cfg: DictConfig) -> bool:
    """Whether Hydra's sweeper is Optuna's: a multirun that searches, minimising ``optimized_metric``."""
    return "optuna" in str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="")).lower()


# what an Optuna search can optimise, among the figures a run records under "final" (module.py and callbacks.py log
# them; test/* would tune on the test split, train/lr is set rather than measured)
TRAIN_FIGURES = ("train/top1_err", "train/loss")
VAL_FIGURES = ("val/top1_err_best", "val/top1_err", "val/top5_err", "val/loss")  # while validation runs
MILESTONE_FIGURES = ("milestone/epochs", "milestone/seconds")  # with callbacks.milestone_stop, once it is reached


def validates(cfg: DictConfig) -> str | None:
    """None if the runs validate; else the trainer setting that turns validation off, as ``key=value``."""
    trainer = cfg.get("trainer") or {}
    limit, every, epochs = (trainer.get(k) for k in ("limit_val_batches", "check_val_every_n_epoch", "max_epochs"))
    if limit is not None and not isinstance(limit, bool) and limit == 0:
        return f"trainer.limit_val_batches={limit}"
    if isinstance(every, int) and isinstance(epochs, int) and 0 <= epochs < every:
        return f"trainer.check_val_every_n_epoch={every} with trainer.max_epochs={epochs}"
    return None


def searchable(cfg: DictConfig) -> tuple[str, ...]:
    """The figures every run of ``cfg`` records that an Optuna search may optimise: train/*, val/* while validation
    runs, milestone/* with the milestone callback (a run that never reaches the milestone fails its trial)."""
    callbacks = cfg.get("callbacks") or {}
    milestone = any(isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("MilestoneStop")
                    for node in callbacks.values())  # fmt: skip
    return (() if validates(cfg) else VAL_FIGURES) + TRAIN_FIGURES + (MILESTONE_FIGURES if milestone else ())


def check_search_metric(cfg: DictConfig) -> None:
    """An Optuna search optimises a figure its runs record: a misspelt ``optimized_metric``, or val/* with validation
    off, would fail each trial after it has trained. A ConfigError naming the figures it can optimise."""
    metric, names = str(cfg.get("optimized_metric", "")), searchable(cfg)
    if metric in names or metric.startswith("test/"):  # test/*: check_nothing_chosen_on_test says why
        return
    if metric in VAL_FIGURES:
        raise ConfigError(f"optimized_metric={metric} is never measured: {validates(cfg)} turns validation off; "
                          f"turn it on, or optimise one of {', '.join(names)}")  # fmt: skip
    raise ConfigError(
        f"optimized_metric={metric} is not a figure these runs record; optimise one of {', '.join(names)}"
    )


CHECKED = (
    "data.val_size",
    "data.minival_per_class",
    "scheduler",
    "callbacks",
    "test",
    "test_ckpt",
    "optimized_metric",
    "experiment",
    "hparams_search",
)


SEARCH_CHECKED = ("optimized_metric", "trainer", "callbacks", "experiment", "hparams_search")  # check_search_metric's


def _sweeps_what_the_check_reads(config: DictConfig, checked: tuple[str, ...]) -> bool:
    """Whether a command-line sweep or the sweeper's params set a key a check reads (``checked``): the config a
    multirun starts with has none of their values, so only the jobs can tell."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=None) or []]
    swept = {
        o.key_or_group.lstrip("+~") for o in OverridesParser.create().parse_overrides(task) if o.is_sweep_override()
    }
    swept |= {str(k) for k in OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}}
    keys = {key.split("@")[0].removeprefix("/").replace("/", ".") for key in swept}  # group/option -> group.option
    return any(k == c or c.startswith(f"{k}.") or k.startswith(f"{c}.") for k in keys for c in checked)


def check_nothing_chosen_on_test(cfg: DictConfig, searching: bool) -> None:
    """Nothing may be chosen on the test split: an Optuna search minimising a test/* metric, and, with
    ``data.val_size=0`` (val/* is the test split, only printed), a callback that stops on val/*, a learning rate that
    follows it, testing the checkpoint that did best on it, or a search minimising it. Each would report an
    optimistic error. A ConfigError naming the choice and the fix; ``searching``: this is an Optuna multirun."""
    metric = str(cfg.get("optimized_metric", ""))
    if searching and metric.startswith("test/"):
        raise ConfigError(f"the Optuna search minimises optimized_metric={metric}: it would tune on the test split; "
                          "minimise a val/* metric (e.g. val/top1_err_best) of a held-out split")  # fmt: skip
    data = cfg.get("data")
    if searching and metric.startswith("val/") and isinstance(data, DictConfig) and data.get("minival_per_class") == 0:
        raise ConfigError(f"the Optuna search minimises optimized_metric={metric}, which with data.minival_per_class=0 "
                          "is the val split it reports: it would tune on it; hold out a minival "
                          "(data.minival_per_class>0)")  # fmt: skip
    if not isinstance(data, DictConfig) or data.get("val_size") != 0:
        return
    on_test, held_out = (
        "which with data.val_size=0 is the test split",
        "or hold out a validation split (data.val_size>0)",
    )
    watching = {key: node for key, node in (cfg.get("callbacks") or {}).items()
                if isinstance(node, DictConfig) and str(node.get("monitor", "")).startswith("val/")}  # fmt: skip
    for key, node in watching.items():
        if str(node.get("_target_", "")).endswith("EarlyStopping"):
            raise ConfigError(f"callbacks.{key} stops on {node.monitor}, {on_test}: the epoch would be chosen on "
                              f"test; set callbacks.{key}=null, {held_out}")  # fmt: skip
    scheduler = cfg.get("scheduler")
    if isinstance(scheduler, DictConfig) and str(scheduler.get("_target_", "")).endswith("ReduceLROnPlateau"):
        raise ConfigError(f"scheduler=plateau lowers the learning rate when val/top1_err stops improving, {on_test}: "
                          f"the schedule would follow test; use a fixed one (scheduler=multistep, step or none), "
                          f"{held_out}")  # fmt: skip
    if watching and cfg.get("test", True) and cfg.get("test_ckpt") == "best":
        raise ConfigError(f"test_ckpt=best with data.val_size=0 tests the epoch that did best on the test split; set "
                          f"test_ckpt=last, {held_out}")  # fmt: skip
    if searching and metric.startswith("val/"):
        raise ConfigError(f"the Optuna search minimises optimized_metric={metric}, {on_test}: it would tune on "
                          f"test; {held_out.removeprefix('or ')}")  # fmt: skip


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        _refuse(f"cannot write run dirs under {folder}; set paths.log_dir (or ALEXNET_LOG_DIR) to a writable folder")


def _check_links(run_dir: Path) -> None:
    """The run dir itself and everything a run writes in it are real files and folders, not links."""
    if any(p.is_symlink() for p in (run_dir, *(run_dir / n for n in LINKLESS))):
        _refuse(f"{run_dir} holds a link where the run writes ({', '.join(LINKLESS)}); a run dir is written only in "
                "place: remove the link")  # fmt: skip


def _check_free(run_dir: Path) -> None:
    """Refuse (before Hydra adds its ``.hydra/resume_*`` there) a run dir whose lock another process holds."""
    lock = run_dir / ".lock"
    if not lock.is_file() or lock.is_symlink():
        return
    fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        _refuse(f"{run_dir} is being run by another process (pid {holder}); it is left to that one")
    finally:
        os.close(fd)


def _refuse(message: str) -> None:
    # exit here: Hydra reports an exception from a callback with its own traceback
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# ------------------------------------------------------------------------- starting again


def resume_config(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, Path]:
    """For ``ckpt_path=last``: the resumed run's config (its original overrides, then today's) and newest checkpoint."""
    original = run_dir / ".hydra" / "overrides.yaml"
    newest = newest_checkpoint(run_dir / "checkpoints")  # by the epoch and step each holds, not by name
    if not original.is_file() or newest is None:
        what = f"run dir {cfg.run_dir}" if cfg.run_dir else f"a run named {cfg.name!r}" if cfg.name else "any run"
        raise ConfigError(
            f"ckpt_path=last found no checkpoint of {what} under {run_dir.parent}; "
            "give name=<run name> or run_dir=<run dir> of a run that saved one"
        )
    hc = HydraConfig.get()

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    today = [o for o in hc.overrides.task if key(o) not in ("ckpt_path", "run_dir")]
    restored = [o for o in today if key(o).split(".")[0] in ("optimizer", "scheduler")]
    if restored:
        raise ConfigError(
            f"{restored[0]}: a resumed run restores its optimizer and schedule from the checkpoint, so this would be "
            "ignored; resume without it (or start a new run)"
        )
    try:
        stored = OmegaConf.load(original) if not original.is_symlink() else None
    except (OSError, ValueError, RecursionError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(
            f"{original} is unreadable ({type(err).__name__}); it was not written by alexnet-train"
        ) from err
    if not OmegaConf.is_list(stored):
        raise ConfigError(f"{original} is not a list of overrides (or is a link); it was not written by alexnet-train")
    # as written (iterating the ListConfig would resolve interpolations); today's values win; the rest may only
    # select what the project's configs offer
    stored = [str(o) for o in OmegaConf.to_container(stored, resolve=False)]
    before = [o for o in stored if key(o) not in {key(t) for t in today} | {"ckpt_path", "run_dir"}]
    before = check_overrides(before, str(original))
    resumed = compose(config_name=hc.job.config_name, overrides=[*before, *today])
    check_config(OmegaConf.to_container(resumed, resolve=False), f"the config resumed from {run_dir}")
    if "seed" not in {key(o) for o in today} and (record := run_dir / "metrics.json").is_file():
        stored_record = read_record(record)  # the seed drawn at the start
        if stored_record is None:
            raise ConfigError(f"{record} is unreadable; give seed=<the run's seed> to resume it")
        seed = stored_record.get("seed", resumed.seed)
        if seed is not None and not valid_seed(seed):
            raise ConfigError(f"{record} holds seed={seed!r}, not one in 0..{MAX_SEED}; give seed=<the run's seed>")
        resumed.seed = seed
    return resumed, newest


# Keys that say where a run lives, what it shows or how the report reads it, not what it computes: a sweep
# moved to another machine, watched with other callbacks or given a better-worded claim is still the same sweep.
_NOT_FINGERPRINTED = (
    "paths", "callbacks", "logger", "ckpt_path", "run_dir", "name", "tags", "ablation", "optimized_metric", "extras",
)  # fmt: skip


def fingerprinted(cfg: DictConfig) -> dict[str, Any]:
    """What decides a run's result: the composed config, resolved, less paths, callbacks, loggers and the
    ablation's report block (its epoch budget is counted where it lands, in ``trainer.max_epochs``)."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_FINGERPRINTED:
        tree.pop(key, None)
    for section, key in (("data", "path"), ("data", "cache_dir"), ("trainer", "default_root_dir")):
        (tree.get(section) or {}).pop(key, None)
    return json.loads(json.dumps(tree, sort_keys=True, default=str))


MAX_SEED = 2**32 - 1  # what torch, NumPy and Lightning's seed_everything accept


def valid_seed(seed: object) -> bool:
    return isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED


def config_fingerprint(cfg: DictConfig) -> str:
    """A short hash of :func:`fingerprinted`."""
    return hashlib.sha1(json.dumps(fingerprinted(cfg), sort_keys=True).encode()).hexdigest()[:16]


def _same_config(record: dict[str, Any], cfg: DictConfig) -> bool:
    """Whether a job's stored record was made with this config: the same fingerprint, or (the record keeps the
    tree it hashed) every value it held still the same, keys added to the project's configs since then aside."""
    if record.get("fingerprint") == config_fingerprint(cfg):
        return True
    stored = record.get("fingerprinted")
    return isinstance(stored, dict) and _contained(stored, fingerprinted(cfg))


def _contained(old: Any, new: Any) -> bool:
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and _contained(v, new[k]) for k, v in old.items())
    return old == new


def previous_attempt(cfg: DictConfig, run_dir: Path) -> tuple[dict | None, Path | None]:
    """What an earlier attempt left in this multirun job's dir (the same sweep started again with its
    ``hydra.sweep.dir``): ``(record, None)``: it finished with this config, keep it; ``(None, last.ckpt)``: it
    was interrupted, resume it; ``(None, None)``: nothing there, or it failed: run it from the start.

    A drawn seed is taken over from the earlier attempt; a finished or interrupted run of another config is
    refused (a failed one is simply run again).
    """
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None, None
    record = read_record(path)
    if record is None:  # no result to keep: set aside, run again
        aside = path.with_name(f"metrics.unreadable-{run_id()}.json")
        path.rename(aside)
        log.warning("%s was unreadable: kept as %s, the job runs again from the start", path, aside.name)
        clear_attempt(run_dir)
        return None, None
    if cfg.seed is None and isinstance(record.get("seed"), int) and valid_seed(record["seed"]):
        cfg.seed = record["seed"]
    if record.get("status") == "failed":  # no result to keep: run it again from the start, whatever its config
        clear_attempt(run_dir)
        return None, None
    if not _same_config(record, cfg):
        raise ConfigError(
            f"job dir {run_dir} holds a run of another config ({record.get('status', 'unknown')}); start the sweep "
            "in a new hydra.sweep.dir, or delete that job dir to run it again"
        )
    last = run_dir / "checkpoints" / "last.ckpt"
    if record.get("status") == "finished":
        return record, None
    if record.get("status") in ("running", "interrupted") and last.is_file():
        return None, last
    clear_attempt(run_dir)
    return None, None


def earlier_seconds(run_dir: Path) -> float:
    """The training seconds an interrupted attempt in ``run_dir`` recorded (0 if none): a resumed run adds its own."""
    record = read_record(run_dir / "metrics.json")
    ok = record is not None and record.get("status") in ("interrupted", "running")
    seconds = record.get("seconds") if ok else None
    return float(seconds) if isinstance(seconds, (int, float)) and seconds >= 0 else 0.0


def clear_attempt(run_dir: Path) -> None:
    """Remove an attempt that left no result (failed, or stopped before its first checkpoint): its checkpoints and
    TensorBoard events, so the new attempt's curves start clean."""
    for stale in [run_dir / "checkpoints", *run_dir.glob("events.out.tfevents.*")]:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        elif stale.exists() or stale.is_symlink():  # a failed attempt may have left no checkpoints/ at all
            stale.unlink()


# -------------------------------------------------------------------------------------- run records


def git_info(path: Path) -> dict[str, Any]:
    """The commit of the checkout at ``path`` and whether it had uncommitted changes (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


@dataclass
class Start:
    """What a start of ``alexnet-train`` does in its run dir."""

    cfg: DictConfig  # the config to run: a resumed run's own, today's overrides on top
    resume_from: Path | None  # the checkpoint to continue from
    kept: dict[str, Any] | None = None  # a sweep job that finished earlier with this config: its record, nothing to run


def start(cfg: DictConfig, run_dir: Path) -> Start:
    """Continue a run in its own dir with its own config (``ckpt_path=last``), start from a given checkpoint, or, in
    a sweep started again, keep a finished job and resume an interrupted one; else start afresh."""
    if cfg.ckpt_path == "last":
        return Start(*resume_config(cfg, run_dir))
    if cfg.ckpt_path is not None:
        return Start(cfg, Path(cfg.ckpt_path).expanduser().resolve())
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        kept, resume_from = previous_attempt(cfg, run_dir)
        return Start(cfg, resume_from, kept)
    return Start(cfg, None)


def settle_seed(cfg: DictConfig) -> int:
    """The run's seed: the one given (checked), else one drawn now; written into ``cfg`` so the record holds it.
    Its tags are checked here too: both are what a run is told apart by."""
    tags = cfg.get("tags")
    if tags is not None and (not OmegaConf.is_list(tags) or not all(isinstance(t, (str, int)) for t in tags)):
        raise ConfigError(f"tags={tags!r}: give a list, e.g. tags=[lrn,first-try]")
    if cfg.seed is not None and not valid_seed(cfg.seed):
        raise ConfigError(f"seed={cfg.seed!r} is not an integer in 0..{MAX_SEED}; give e.g. seed=0, or leave it out")
    cfg.seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    return cfg.seed


SUBSET_KEYS = ("fast_dev_run", "overfit_batches", "limit_train_batches", "limit_val_batches", "limit_test_batches")


def subset(trainer_cfg: DictConfig) -> dict[str, Any]:
    """The trainer settings that make a run see only part of its data (empty for a run on whole splits)."""

    def part(key: str, value: Any) -> bool:
        if key.startswith("limit_"):  # None or the float 1.0: all of it (the int 1 is one batch)
            return value is not None and not (isinstance(value, float) and value == 1.0)
        return bool(value)  # fast_dev_run: true or a number of batches; overfit_batches: > 0

    return {k: trainer_cfg.get(k) for k in SUBSET_KEYS if part(k, trainer_cfg.get(k))}


def config_summary(cfg: DictConfig, classes: int) -> dict[str, Any]:
    """The settings a reader compares runs by, resolved, with the class count the network was built for."""
    pick = {
        k: OmegaConf.to_container(cfg[k], resolve=True) if cfg.get(k) else None
        for k in ("model", "optimizer", "scheduler")
    }
    data = {**OmegaConf.to_container(cfg.data, resolve=True), "num_classes": classes}
    pick["model"]["num_classes"] = classes
    trainer = {k: cfg.trainer.get(k) for k in ("accelerator", "devices", "precision", "max_epochs", "deterministic")}
    return {**pick, "data": data, "trainer": trainer}


class RunRecord(L.Callback):
    """A run's ``metrics.json``, written whole at each change of state (by one process: rank 0 under DDP or SLURM).

    Made from the config as composed (its fingerprint is taken before the data fills in what follows from it);
    :meth:`training` times the fit and turns SIGTERM into an ``interrupted`` record and exit 143. As a trainer
    callback it also writes, at each epoch's end, how far the run got and its training time so far: a run killed
    outright (SIGKILL, or a launcher stopping a sibling job) still says so, and the main process of a spawned DDP
    run reads the ranks' progress back from it (:meth:`progress`).
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, resume_from: Path | None) -> None:
        self.cfg, self.run_dir, self.writer = cfg, run_dir, False
        self.began = time.perf_counter()  # reset when training starts
        self.earlier = earlier_seconds(run_dir) if resume_from is not None else 0.0  # a resumed run's time so far
        hc = HydraConfig.get()
        self.data: dict[str, Any] = {
            "status": "running",
            "seed": cfg.seed,
            "run_dir": str(run_dir),
            "overrides": list(hc.overrides.task),
            "resumed_from": str(resume_from) if resume_from else None,
            "fingerprint": config_fingerprint(cfg),  # a rerun of the sweep keeps this job if it still matches
            "fingerprinted": fingerprinted(cfg),  # ... or if every value it hashed is still the same (keys added since)
            "git": git_info(Path(hc.runtime.cwd)),
            "versions": {"torch": torch.__version__, "lightning": L.__version__},
            "tags": list(cfg.get("tags") or []),
            "subset": subset(cfg.trainer),  # non-empty: trained or evaluated on part of the data only
        }

    def built(self, classes: int, writer: bool) -> None:
        """The config as built (with what follows from the data: its class count), and whether this process writes
        (under SLURM every rank runs the entry point; rank 0 writes); the first save, before training starts."""
        self.writer = writer
        self.save(config=config_summary(self.cfg, classes))

    def save(self, **changes: Any) -> None:
        self.data.update(changes)
        if self.writer:
            write_json(self.run_dir / "metrics.json", self.data)

    @contextlib.contextmanager
    def training(self, trainer: L.Trainer) -> Iterator[None]:
        """Time the fit (``seconds``: over every attempt); a SIGTERM (Lightning saved ``last.ckpt`` on it) is recorded
        as ``interrupted`` with its steps and the command that resumes the run, and the process exits 143."""
        self.began = time.perf_counter()  # one clock for every process on this machine: spawned ranks read it too
        try:
            yield
        except SIGTERMException:
            seconds = self.seconds()
            self.save(status="interrupted", seconds=seconds, steps=trainer.global_step)
            name = self.cfg.name
            resume = override("name", name) if name else override("run_dir", self.run_dir)
            saved = self.run_dir / "checkpoints" / "last.ckpt"
            print(f"interrupted: saved {saved}; resume with alexnet-train ckpt_path=last {resume}", file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT_CODE)
        self.data["seconds"] = self.seconds()

    def seconds(self) -> float:
        """Training seconds over every attempt, this one up to now."""
        return round(self.earlier + time.perf_counter() - self.began, 2)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.save(epochs=trainer.current_epoch + 1, steps=trainer.global_step, seconds=self.seconds())

    def progress(self, trainer: L.Trainer) -> tuple[int, int]:
        """(epochs, steps) trained, as rank 0 recorded them at its last epoch end (in a spawned DDP run, in another
        process); the trainer's own count if no epoch ended in this attempt."""
        stored = read_record(self.run_dir / "metrics.json") or {}  # built() wrote it afresh before training
        if isinstance(stored.get("epochs"), int) and isinstance(stored.get("steps"), int):
            return stored["epochs"], stored["steps"]
        return trainer.current_epoch, trainer.global_step
