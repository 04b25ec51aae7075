"""One-line errors: bad input is said in one line that names the thing and the fix, and a sweep goes on past it.

Every error a user can fix (a config, data, a file from elsewhere, a full disk, a diverged run) is a
:class:`UserError`; the modules that raise them subclass it, so this module imports none of them.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from alexnet_lab.files import read_record, write_json

log = logging.getLogger(__name__)


class UserError(Exception):
    """Bad input the user can fix; its message names the thing and the fix, and is shown as one ``error:`` line."""


class ConfigError(UserError, ValueError):
    """A configuration that cannot work; the message names the key and the fix."""


class JobBusy(ConfigError):
    """Another process is running this job dir (a second multirun into the same sweep dir, a second resume)."""


def root_cause(err: BaseException) -> BaseException:
    """The library's own exception under Hydra's InstantiationException wrapper."""
    while err.__cause__ is not None and type(err).__name__ == "InstantiationException":
        err = err.__cause__
    return err


def named_error(cfg: DictConfig, key: str, err: BaseException) -> ConfigError:
    """``error: optimizer.lr=-1: Invalid learning rate: -1``: the node's key whose value the message quotes, else
    its keys set on the command line, else the node."""
    cause = root_cause(err)
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
    except UserError:
        raise
    except Exception as err:
        raise named_error(cfg, key, err) from err


def build_nodes(cfg: DictConfig, group: str) -> list[Any]:
    """Every entry of a config group that is set (``callbacks``, ``logger``), each built as :func:`build_node`
    builds one; an entry set to null is left out."""
    return [build_node(cfg, f"{group}.{key}") for key, node in (cfg.get(group) or {}).items() if node]


def use_node(cfg: DictConfig, key: str, use: Callable[[], Any]) -> Any:
    """Call ``use`` once (e.g. build the optimizer from its partial) so a refused value of ``key`` fails now, as one
    line naming it; what ``use`` returns."""
    try:
        return use()
    except Exception as err:
        raise named_error(cfg, key, err) from err


def user_message(err: BaseException) -> str:
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
        user_error = isinstance(err, UserError)
        cause = root_cause(err)  # not Hydra's "Error in call to target ..." wrapper line
        message = user_message(err) if user_error else f"{type(cause).__name__}: {cause}".strip().splitlines()[0]
        if multirun:
            log.exception("job failed, the sweep goes on: %s", message)
            record_failure(run_dir, message)
            return None
        if user_error and all(p.name in {".hydra", ".lock", f"{hc.job.name}.log"} for p in run_dir.iterdir()):
            logging.shutdown()
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing but the composed config was written
        else:
            record_failure(run_dir, message)
        if user_error:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        raise


def record_failure(run_dir: Path, message: str) -> None:
    """Mark this run failed; a record this run did not start (a resumed run's earlier result) stays as it was, and so
    does one that cannot be read."""
    path = run_dir / "metrics.json"
    record = read_record(path) if path.exists() else {"status": "running"}
    if record is not None and record.get("status") == "running":
        record.update(status="failed", error=message)
        write_json(path, record)
