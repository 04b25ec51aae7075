"""The command line the console scripts share: Hydra's resolvers, ``-m`` anywhere, optional plugins named, pasted
paths quoted, and command-line values type-checked against the configs' defaults."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import sys
import warnings

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from alexnet_lab.errors import ConfigError
from alexnet_lab.runs import hydra_subdir_for, run_dir_for, run_id, share_run_id


def swept_overrides(task_overrides: ListConfig | list[str], sweeper_params: DictConfig | None = None) -> str:
    """This job's values of the swept keys (``model.norm-none_seed-2``), for run dir and TensorBoard names.

    Swept keys are those of the sweeper's ``params`` (experiments) and those swept on this process's command
    line; without any, all of the job's overrides. ``key-value`` pairs joined by ``_``, and any character Hydra's
    override grammar reserves (``=``, ``,``, brackets, quotes) made a ``-``, so a pasted path to the job
    (``ckpt_path=.../0_seed-1/checkpoints/last.ckpt``) parses as it is. (Hydra's ``hydra.job.override_dirname``
    names a job by all of its overrides less a fixed ``exclude_keys`` list: ``budget=paper,compile=true,...``, the
    same for every job but the part that varies.)
    """
    parsed = OverridesParser.create().parse_overrides([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()} | set(sweeper_params or {})
    mine = [str(o) for o in task_overrides]
    chosen = [o for o in mine if o.split("=", 1)[0].lstrip("+~") in swept] or mine
    pairs = ("-".join(o.lstrip("+~").split("=", 1)) for o in sorted(chosen))
    return re.sub(r"[^\w.+@%-]", "-", "_".join(pairs)) or "default"


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
