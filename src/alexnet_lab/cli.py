"""What the console scripts share: run ids, override type checks, one-line errors, run records."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from alexnet_lab.data import DataError

log = logging.getLogger(__name__)

# One id per process: a timestamp plus random hex, so two runs started in the same second never share a dir.
RUN_ID = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", lambda: RUN_ID)


def swept_overrides(task_overrides: ListConfig | list[str]) -> str:
    """This job's values of the keys the command line sweeps (``norm=none,seed=2``), for run dir names.

    Falls back to all of the job's overrides when the sweep was not given on this process's command line.
    """
    parsed = OverridesParser.create().parse_overrides([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    mine = [str(o) for o in task_overrides]
    chosen = [o for o in mine if o.split("=", 1)[0].lstrip("+~") in swept] or mine
    return ",".join(sorted(chosen)).replace("/", "-") or "default"


if not OmegaConf.has_resolver("swept"):
    OmegaConf.register_new_resolver("swept", swept_overrides)
# the start directory; unlike ${hydra:runtime.cwd} it resolves before Hydra has set up a multirun
if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the key and the fix."""


USER_ERRORS = (ConfigError, DataError)


def multirun_flag_first() -> None:
    """Let ``-m``/``--multirun`` stand anywhere (``alexnet-train experiment=x -m seed=1,2``).

    Hydra's argparse parser stops at the first positional override, so the flag is moved to the front.
    """
    flags = [a for a in sys.argv[1:] if a in ("-m", "--multirun")]
    if flags:
        sys.argv[1:] = flags[:1] + [a for a in sys.argv[1:] if a not in ("-m", "--multirun")]


def check_override_types(cfg: DictConfig) -> None:
    """Refuse command-line values whose type differs from the configured default (``trainer.max_epochs=abc``).

    Hydra accepts any string for a YAML key; the defaults are composed once more without the value
    overrides and each overridden number or boolean must still be one.
    """
    hc = HydraConfig.get()
    overrides = OverridesParser.create().parse_overrides(list(hc.overrides.task))
    value_keys, base = [], []
    for override, text in zip(overrides, hc.overrides.task):
        key = override.key_or_group
        node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False) if not override.is_delete() else None
        if override.is_sweep_override() or override.is_delete() or node is None or isinstance(node, (DictConfig, ListConfig)):
            base.append(text)  # a config group choice (model=alexnet) or something we cannot type-check
        else:
            value_keys.append(key)
    if not value_keys:
        return
    defaults = compose(config_name=hc.job.config_name, overrides=base)
    for key in value_keys:
        default = OmegaConf.select(defaults, key, throw_on_resolution_failure=False)
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not a boolean; use {key}=true or {key}=false")
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key}={value!r} is not an integer; give e.g. {key}={default}")
        if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{key}={value!r} is not a number; give e.g. {key}={default}")


def git_info(path: Path) -> dict[str, Any]:
    """The commit of the checkout at ``path`` and whether it had uncommitted changes (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become strings (TensorBoard HPARAMS takes scalars only)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value if value is not None else "null"
        else:
            out[name] = str(value)
    return out


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def run_guarded(task: Callable[[DictConfig, Path], dict], cfg: DictConfig) -> dict | None:
    """Run ``task`` in the Hydra run dir with the failure policy of a research template.

    A single run that fails on bad input prints one ``error:`` line, removes the run dir it had just made
    (nothing else was written yet) and exits 2. Inside a multirun, any failure is written to the job's
    ``metrics.json`` and the sweep goes on to the next job.
    """
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        return task(cfg, run_dir)
    except Exception as err:
        user_error = isinstance(err, USER_ERRORS)
        message = str(err) if user_error else f"{type(err).__name__}: {err}".splitlines()[0]
        if multirun:
            log.exception("job failed, the sweep goes on: %s", message)
            _record_failure(run_dir, message)
            return None
        if user_error and all(p.name in {".hydra", f"{hc.job.name}.log"} for p in run_dir.iterdir()):
            logging.shutdown()
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing but the composed config was written
        else:
            _record_failure(run_dir, message)
        if user_error:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        raise


def _record_failure(run_dir: Path, message: str) -> None:
    path = run_dir / "metrics.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(status="failed", error=message)
    write_json(path, record)
