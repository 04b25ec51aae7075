"""What the console scripts share: run ids, override type checks, one-line errors, run records."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
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
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from alexnet_lab.checkpointing import CheckpointWriteError, UnsafeCheckpoint, newest_checkpoint, safe_load
from alexnet_lab.data import DataError
from alexnet_lab.files import atomic_write
from alexnet_lab.module import TrainingDiverged
from alexnet_lab.trust import Refused, check_config, check_overrides, check_values

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the key and the fix."""


class JobBusy(ConfigError):
    """Another process is running this job dir (a second multirun into the same sweep dir, a second resume)."""


USER_ERRORS = (ConfigError, DataError, TrainingDiverged, CheckpointWriteError, Refused)


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` (an fcntl lock, released when the process ends, however it ends) while a job runs in
    a dir that another process may also start: a second one is refused with :class:`JobBusy` and touches nothing.
    Under SLURM every task runs the entry point; only the first takes the lock."""
    if int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")) or 0) != 0:
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


def swept_overrides(task_overrides: ListConfig | list[str], sweeper_params: DictConfig | None = None) -> str:
    """This job's values of the swept keys (``model.norm-none_seed-2``), for run dir and TensorBoard names.

    Swept keys are those of the sweeper's ``params`` (experiments) and those swept on this process's command
    line; without any, all of the job's overrides. ``key-value`` pairs joined by ``_``, and any character Hydra's
    override grammar reserves (``=``, ``,``, brackets, quotes) made a ``-``, so a pasted path to the job
    (``ckpt_path=.../0_seed-1/checkpoints/last.ckpt``) parses as it is.
    """
    parsed = OverridesParser.create().parse_overrides([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()} | set(sweeper_params or {})
    mine = [str(o) for o in task_overrides]
    chosen = [o for o in mine if o.split("=", 1)[0].lstrip("+~") in swept] or mine
    pairs = ("-".join(o.lstrip("+~").split("=", 1)) for o in sorted(chosen))
    return re.sub(r"[^\w.+@%-]", "-", "_".join(pairs)) or "default"


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
    """A new run dir (``<time>_<random>[_<name>]``), or with ``ckpt_path=last`` the run being resumed."""
    try:
        Path(runs).mkdir(parents=True, exist_ok=True)
        writable = os.access(runs, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:  # exit here: an exception would reach the user wrapped in Hydra's resolver traceback
        print(
            f"error: cannot write run dirs under {runs}; set paths.log_dir (or ALEXNET_LOG_DIR) to a writable folder",
            file=sys.stderr,
        )
        sys.exit(2)
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
)  # written in a run dir


def hydra_subdir_for(ckpt_path: str | None, output_dir: str | None = None) -> str:
    """Where Hydra saves the composed config: a resumed run, or a sweep job started again in a dir that already
    holds a run, keeps its original .hydra/ as it was and adds a subfolder."""
    if output_dir and any(p.is_symlink() for p in (Path(output_dir), *(Path(output_dir) / n for n in LINKLESS))):
        # exit here: an exception would reach the user wrapped in Hydra's resolver traceback
        print(f"error: {output_dir} holds a link where the run writes ({', '.join(LINKLESS)}); a run dir is written "
              "only in place: remove the link", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    if ckpt_path == "last":
        return f".hydra/resume_{run_id()}"
    if output_dir and (Path(output_dir) / "metrics.json").exists():
        return f".hydra/rerun_{run_id()}"
    return ".hydra"


def register_resolvers() -> None:
    """The resolvers the configs use: ${run_id:}, ${swept:...}, ${run_dir_for:...}, ${hydra_subdir_for:...} and
    ${cwd:}, the start directory (unlike ${hydra:runtime.cwd} it resolves before Hydra sets up a multirun).
    Called by the console scripts (and by whoever composes the configs in-process); importing this module has
    no such side effect."""
    for name, resolver in (
        ("run_id", run_id),
        ("swept", swept_overrides),
        ("run_dir_for", run_dir_for),
        ("hydra_subdir_for", hydra_subdir_for),
        ("cwd", os.getcwd),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


# ----------------------------------------------------------------------- command line and overrides


@functools.cache  # once per process: the entry point's, and each joblib worker's (run_guarded calls it there)
def quiet_upstream() -> None:
    """Silence what Lightning prints on every run that is not about the run: torch's pytree deprecation warning
    from its internals, and its tips advertising its cloud products."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: not record.getMessage().startswith("💡 Tip"))


def prepare_command_line() -> None:
    """Share the run id with worker processes, register the config resolvers, quieten upstream noise, and let
    ``-m``/``--multirun`` stand anywhere (``alexnet-train experiment=x -m seed=1,2``).

    Hydra's argparse parser stops at the first positional override, so the flag is moved to the front.
    """
    share_run_id()
    register_resolvers()
    quiet_upstream()
    check_plugins(sys.argv[1:])
    sys.argv[1:] = [_quoted_path(a) for a in sys.argv[1:]]
    flags = [a for a in sys.argv[1:] if a in ("-m", "--multirun")]
    if flags:
        sys.argv[1:] = flags[:1] + [a for a in sys.argv[1:] if a not in ("-m", "--multirun")]


# optional Hydra plugins: what on the command line needs which, and the extra that installs it
PLUGINS = (
    ("hparams_search=", "hydra_plugins.hydra_optuna_sweeper", "hparams-search"),
    ("hydra/launcher=parallel", "hydra_plugins.hydra_joblib_launcher", "joblib"),
    ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher", "slurm"),
)
# optional loggers: the name in logger=..., the module it needs, the extra that installs it
LOGGERS = (("wandb", "wandb", "wandb"), ("mlflow", "mlflow", "mlflow"))


def check_plugins(argv: list[str]) -> None:
    """A command that asks for an optional plugin that is not installed: one line naming the extra to install."""
    needs = [(arg, module, extra) for arg in argv for prefix, module, extra in PLUGINS if arg.startswith(prefix)]
    needs += [(arg, module, extra) for arg in argv if arg.startswith("logger=") for name, module, extra in LOGGERS
              if re.search(rf"\b{name}\b", arg)]  # fmt: skip
    for arg, module, extra in needs:
        if importlib.util.find_spec(module) is None:
            print(f"error: {arg} needs {module.split('.')[-1]}: pip install 'alexnet-lab[{extra}]' (in the checkout: "
                  f"pip install -e '.[{extra}]')", file=sys.stderr)  # fmt: skip
            sys.exit(2)


_PATH_KEYS = re.compile(r"^(ckpt_path|run_dir|data\.path|data\.cache_dir|hydra\.sweep\.dir)=(.+)$")


def _quoted_path(argument: str) -> str:
    """A pasted path to a job dir of an older sweep (``0_model=x,seed=1``) as Hydra's grammar takes it: quoted."""
    match = _PATH_KEYS.match(argument)
    if not match or re.fullmatch(r"[\w./:~+@%-]*", match[2]) or match[2][0] in "'\"" or '"' in match[2]:
        return argument
    return f'{match[1]}="{match[2]}"'


def check_override_types(cfg: DictConfig) -> None:
    """Refuse command-line values whose type differs from the configured default (``trainer.max_epochs=abc``).

    Hydra accepts any string for a YAML key; the defaults are composed once more without the value
    overrides and each overridden number or boolean must still be one.
    """
    if cfg.get("channels_last", False) not in (True, False, "auto"):
        raise ConfigError(f"channels_last={cfg.channels_last!r}: use channels_last=true, false or auto")
    hc = HydraConfig.get()
    overrides = OverridesParser.create().parse_overrides(list(hc.overrides.task))
    value_keys, base = [], []
    for override, text in zip(overrides, hc.overrides.task):
        key = override.key_or_group
        node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False) if not override.is_delete() else None
        if (
            override.is_sweep_override()
            or override.is_delete()
            or node is None
            or isinstance(node, (DictConfig, ListConfig))
        ):
            base.append(text)  # a config group choice (model=alexnet) or something we cannot type-check
        else:
            value_keys.append(key)
    if not value_keys:
        return
    defaults = compose(config_name=hc.job.config_name, overrides=base)
    for key in value_keys:
        default = OmegaConf.select(defaults, key, throw_on_resolution_failure=False)
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if key == "compile" and isinstance(value, str):
            continue  # true/false, or the name of a torch.compile backend
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not a boolean; use {key}=true or {key}=false")
        integer = isinstance(default, int) and not isinstance(default, bool)
        if integer and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{key}={value!r} is not an integer; give e.g. {key}={default}")
        if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{key}={value!r} is not a number; give e.g. {key}={default}")


def _root_cause(err: BaseException) -> BaseException:
    """The library's own exception under Hydra's InstantiationException wrapper."""
    while err.__cause__ is not None and type(err).__name__ == "InstantiationException":
        err = err.__cause__
    return err


def _named(cfg: DictConfig, key: str, err: BaseException) -> ConfigError:
    """``error: optimizer.lr=-1: Invalid learning rate: -1``: the node's key whose value the message quotes, else
    its keys set on the command line, else the node."""
    cause = _root_cause(err)
    message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if message.startswith(f"{key}."):  # our own message, which names its key already
        return ConfigError(message)
    node = OmegaConf.select(cfg, key)
    culprit = key if isinstance(node, (DictConfig, ListConfig)) or node is None else f"{key}={node}"  # a scalar: itself
    if isinstance(node, DictConfig):
        for name, value in node.items():
            quoted = rf"(?<![\w.]){re.escape(str(value))}(?![\w.])"  # the value as a word, not inside a number
            if not isinstance(value, (DictConfig, ListConfig)) and value is not None and re.search(quoted, message):
                culprit = f"{key}.{name}={value}"
                break
    if culprit == key and HydraConfig.initialized():  # else the values of this node set on the command line
        mine = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("+~").startswith(f"{key}.")]
        culprit = ", ".join(mine) or key
    return ConfigError(f"{culprit}: {message}")


def build_node(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of one config node; what the library refuses becomes one line naming it."""
    try:
        return instantiate(OmegaConf.select(cfg, key), **kwargs)
    except (ConfigError, DataError):
        raise
    except Exception as err:
        raise _named(cfg, key, err) from err


def check_node(cfg: DictConfig, key: str, use: Callable[[], Any]) -> Any:
    """Call ``use`` once (e.g. build the optimizer from its partial) so a refused value of ``key`` fails now, as one
    line naming it; what ``use`` returns."""
    try:
        return use()
    except Exception as err:
        raise _named(cfg, key, err) from err


# ------------------------------------------------------------------------- resuming and checkpoints


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
        _clear_attempt(run_dir)
        return None, None
    if cfg.seed is None and isinstance(record.get("seed"), int) and valid_seed(record["seed"]):
        cfg.seed = record["seed"]
    if record.get("status") == "failed":  # no result to keep: run it again from the start, whatever its config
        _clear_attempt(run_dir)
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
    _clear_attempt(run_dir)
    return None, None


def earlier_seconds(run_dir: Path) -> float:
    """The training seconds an interrupted attempt in ``run_dir`` recorded (0 if none): a resumed run adds its own."""
    record = read_record(run_dir / "metrics.json")
    ok = record is not None and record.get("status") in ("interrupted", "running")
    seconds = record.get("seconds") if ok else None
    return float(seconds) if isinstance(seconds, (int, float)) and seconds >= 0 else 0.0


def _clear_attempt(run_dir: Path) -> None:
    """Remove an attempt that left no result (failed, or stopped before its first checkpoint): its checkpoints and
    TensorBoard events, so the new attempt's curves start clean."""
    for stale in [run_dir / "checkpoints", *run_dir.glob("events.out.tfevents.*")]:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        elif stale.exists() or stale.is_symlink():  # a failed attempt may have left no checkpoints/ at all
            stale.unlink()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by alexnet-train, or a clear error."""
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/<file>.ckpt")
    try:
        ckpt = safe_load(path)
    except UnsafeCheckpoint as err:
        raise ConfigError(
            f"checkpoint {path} was refused: loading it would run code it carries ({err}); alexnet-train's "
            "checkpoints hold tensors and plain values only"
        ) from err
    except Exception as err:
        raise ConfigError(f"checkpoint {path} is unreadable ({type(err).__name__}); pick another file") from err
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    trained = hparams.get("run_config") if isinstance(hparams, dict) else None
    shaped = (
        isinstance(trained, dict)
        and all(isinstance(trained.get(k), dict) for k in ("model", "data"))
        and isinstance(ckpt.get("state_dict"), dict)
        and all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values())
        and trained.get("channels_last", False) in (True, False, "auto")
    )
    if not shaped:
        raise ConfigError(f"checkpoint {path} was not written by alexnet-train (no run_config, model, data and "
                          "state_dict of its shape); pick one that was")  # fmt: skip
    # its config is data: no value is an interpolation, and what is built from it (the network and the data) only as
    # the project's configs offer
    check_values(trained, f"checkpoint {path}")
    check_config({k: trained[k] for k in ("model", "data")}, f"checkpoint {path}")
    if trained["model"].get("weights") is not None:  # torchvision's classes would download them
        raise ConfigError(f"checkpoint {path}: model.weights={trained['model']['weights']!r}; its weights are in the "
                          "checkpoint, nothing is downloaded: pick one trained by alexnet-train")  # fmt: skip
    return ckpt


def restored(ckpt: dict[str, Any], cfg: DictConfig) -> tuple[DictConfig, DictConfig]:
    """(model, data) configs to rebuild a checkpoint's network and data on this machine: its own, with the keys set
    in today's ``data`` on top; derived files (decoded caches, resized copies) go under this machine's data dir unless
    today's ``data.cache_dir`` says otherwise, never where the checkpoint's config points."""
    trained = OmegaConf.create(ckpt["hyper_parameters"]["run_config"])
    data = OmegaConf.merge(trained.data, {k: v for k, v in cfg.data.items() if v is not None})
    if cfg.data.get("cache_dir") is None:
        kind = "imagenet" if "ImageNet" in str(data.get("_target_", "")) else "cifar10"
        data.cache_dir = str(Path(cfg.paths.data_dir) / kind)
    return trained.model, data


def class_count(data: DictConfig, path: Path) -> int:
    """The class count a checkpoint's data config records (its network's output width)."""
    count = data.get("num_classes")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"checkpoint {path} records data.num_classes={count!r}, not a class count; pick one written "
                          "by alexnet-train")  # fmt: skip
    return count


def check_fits(ckpt: dict[str, Any], module: torch.nn.Module, path: Path) -> None:
    """Refuse, in one line, a checkpoint whose weights do not fit ``module`` (another network or class count)."""
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt.get("state_dict", {}).items()}
    if want != got:
        diff = next(k for k in sorted(want.keys() | got.keys()) if want.get(k) != got.get(k))
        model = ckpt["hyper_parameters"]["run_config"].get("model", {})
        raise ConfigError(
            f"checkpoint {path} holds {str(model.get('_target_', '?')).rsplit('.', 1)[-1]} with num_classes="
            f"{model.get('num_classes', '?')}, which does not fit this run's network ({diff}: {got.get(diff)} vs "
            f"{want.get(diff)}); use the model= and data settings it was trained with"
        )


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


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def one_line(err: BaseException) -> str:
    """A user error's message; from a DataLoader worker, its original message rather than torch's wrapper text."""
    text = str(err)
    if text.startswith("Caught ") and "Original Traceback" in text:  # torch re-raised it from a worker process
        return text.strip().splitlines()[-1].split(": ", 1)[-1]
    return text


def run_guarded(task: Callable[[DictConfig, Path], dict], cfg: DictConfig) -> dict | None:
    """Run ``task`` in the Hydra run dir with the failure policy of a research template.

    A single run that fails on bad input prints one ``error:`` line, removes the run dir it had just made
    (nothing else was written yet) and exits 2. Inside a multirun, any failure is written to the job's
    ``metrics.json`` and the sweep goes on to the next job.
    """
    quiet_upstream()
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        return task(cfg, run_dir)
    except JobBusy as err:  # the job belongs to another process: its dir and record are left as they are
        if multirun:
            log.warning("job skipped: %s", err)
            return None
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        user_error = isinstance(err, USER_ERRORS)
        cause = _root_cause(err)  # not Hydra's "Error in call to target ..." wrapper line
        message = one_line(err) if user_error else f"{type(cause).__name__}: {cause}".strip().splitlines()[0]
        if multirun:
            log.exception("job failed, the sweep goes on: %s", message)
            _record_failure(run_dir, message)
            return None
        if user_error and all(p.name in {".hydra", ".lock", f"{hc.job.name}.log"} for p in run_dir.iterdir()):
            logging.shutdown()
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing but the composed config was written
        else:
            _record_failure(run_dir, message)
        if user_error:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        raise


def read_record(path: Path) -> dict[str, Any] | None:
    """A ``metrics.json`` as a dict, or None when there is none or it is not one (a file from elsewhere)."""
    try:
        record = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _record_failure(run_dir: Path, message: str) -> None:
    """Mark this run failed; a record this run did not start (a resumed run's earlier result) stays as it was, and so
    does one that cannot be read."""
    path = run_dir / "metrics.json"
    record = read_record(path) if path.exists() else {"status": "running"}
    if record is not None and record.get("status") == "running":
        record.update(status="failed", error=message)
        write_json(path, record)
