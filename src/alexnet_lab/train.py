"""``alexnet-train``: train one network on one dataset, test it, and write metrics.json (a Hydra app)."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from alexnet_lab import cli
from alexnet_lab.checkpointing import INTERRUPTED_EXIT_CODE
from alexnet_lab.module import Classifier

log = logging.getLogger(__name__)

# the config's resolvers, here and not in cli: a multirun's worker processes (joblib launcher) import this entry
# point to unpickle the task and resolve their run dirs before it runs
cli.register_resolvers()

FINAL_METRICS = ("val/top1_err", "val/top5_err", "test/top1_err", "test/top5_err")


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, Classifier, L.Trainer]:
    """DataModule, LightningModule and Trainer from a composed config. A value a library refuses while a node is
    built (or, for the optimizer and scheduler, first used) is a one-line :class:`cli.ConfigError` naming it."""
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    batch = cfg.data.get("batch_size")
    if isinstance(devices, int) and isinstance(nodes, int) and isinstance(batch, int) and batch % (devices * nodes):
        raise cli.ConfigError(
            f"data.batch_size={batch} (the global batch) does not split over {devices * nodes} devices; "
            f"use a multiple of {devices * nodes}"
        )
    datamodule = cli.build_node(cfg, "data")
    if cfg.data.get("num_classes") is None:  # follow the data: count its classes (decoding or listing it, once)
        cfg.data.num_classes = datamodule.num_classes = datamodule.count_classes()
    net = cli.build_node(cfg, "model")
    check_input(net, datamodule.input_shape, cfg)  # before compile=true compiles it
    example = torch.zeros(1, *datamodule.input_shape)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    optimizer = cli.build_node(cfg, "optimizer")
    scheduler = cli.build_node(cfg, "scheduler") if cfg.get("scheduler") else None
    module = cli.check_node(  # torch.compile refuses an unknown backend name here
        cfg,
        "compile",
        lambda: Classifier(
            net=net,
            optimizer=optimizer,
            scheduler=scheduler,
            num_classes=cfg.data.num_classes,
            channels_last=cfg.channels_last,
            compile=cfg.compile,
            run_config=run_config,
        ),
    )
    if not cfg.compile:  # the model summary's sizes and FLOPs (a compiled net would compile for it first)
        module.example_input_array = example
    # partials: torch checks their values only when they are called
    cli.check_node(cfg, "optimizer", module.build_optimizer)
    if cfg.get("scheduler"):
        cli.check_node(cfg, "scheduler", module.configure_optimizers)
    callbacks = [cli.build_node(cfg, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c]
    loggers = [cli.build_node(cfg, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items() if c]
    trainer = cli.build_node(cfg, "trainer", callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def check_input(net: torch.nn.Module, shape: tuple[int, ...], cfg: DictConfig) -> None:
    """One forward pass of two blank images of the data's size: a network that cannot take them is a one-line
    error now, not a stack trace after the first batch."""
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(2, *shape))
    except Exception as err:
        target = str(cfg.model.get("_target_", "?")).rsplit(".", 1)[-1]
        cause = str(err).strip().splitlines()[0]
        raise cli.ConfigError(
            f"model {target} cannot take the data's {shape[1]}x{shape[2]} images ({cause}); pick a model= for "
            "this data, or set data.crop_size to the size the network was built for"
        ) from err
    finally:
        net.train(was_training)


# what a researcher compares runs by, in TensorBoard's HPARAMS tab: (column, config key); keys a config lacks are left out
HPARAMS = (
    ("experiment", None), ("model", "model._target_"), ("norm", "model.norm"), ("pool", "model.pool"),
    ("activation", "model.activation"), ("dropout", "model.dropout"), ("groups", "model.groups"),
    ("optimizer", "optimizer._target_"), ("lr", "optimizer.lr"), ("batch_size", "data.batch_size"), ("seed", "seed"),
    ("budget", "budget"), ("max_epochs", "trainer.max_epochs"),
)  # fmt: skip
FIRST_SHOWN = ("run", "experiment", "model", "lr", "seed")  # the HPARAMS columns shown before any is ticked
# TensorBoard's CUSTOM SCALARS tab: training against validation on one chart
LAYOUT = {
    "curves": {
        "top-1 error (%): train vs val": ["Multiline", ["train/top1_err", "val/top1_err"]],
        "loss: train vs val": ["Multiline", ["train/loss", "val/loss"]],
    }
}


def hparams_of(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The curated hyperparameters of a run: its readable name first (a sweep job's dir name says what it varies),
    then the HPARAMS keys it has; classes by their short name."""
    choice = HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None
    params: dict[str, Any] = {"run": run_dir.name, "tags": ",".join(cfg.get("tags") or []) or "-"}
    for column, key in HPARAMS:
        value = choice if column == "experiment" else OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        value = str(value).rsplit(".", 1)[-1] if key and key.endswith("_target_") else value
        params[column] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return params


def log_hparams(trainer: L.Trainer, params: dict[str, Any]) -> None:
    """Fill TensorBoard's HPARAMS tab: the run's hyperparameters against its final metric tags.

    Only the hparams summary is written: the plugin shows the last value each metric tag has in the run, i.e. the
    real final val/test errors already logged. (Lightning's ``log_hyperparams(params, metrics)`` would also log
    the metrics again at step 0, a stray first point on every curve.)
    """
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torch.utils.tensorboard.summary import hparams

    experiment, *sessions = hparams(params, dict.fromkeys(FINAL_METRICS, 0.0))
    # the tab shows a few columns at first: those marked as differing between runs, then the rest by name; mark the
    # ones a reader compares runs by, so they are the ones shown
    data = experiment.value[0].metadata.plugin_data
    content = plugin_data_pb2.HParamsPluginData.FromString(data.content)
    for info in content.experiment.hparam_infos:
        info.differs = info.name in FIRST_SHOWN
    data.content = content.SerializeToString()
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()
            for summary in (experiment, *sessions):
                writer.add_summary(summary)
            logger.experiment.flush()


def scalar_metrics(trainer: L.Trainer, prefix: str = "") -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


SUBSET_KEYS = ("fast_dev_run", "overfit_batches", "limit_train_batches", "limit_val_batches", "limit_test_batches")


def subset(trainer_cfg: DictConfig) -> dict[str, Any]:
    """The trainer settings that make a run see only part of its data (empty for a run on whole splits)."""

    def part(key: str, value: Any) -> bool:
        if key.startswith("limit_"):  # None or the float 1.0: all of it (the int 1 is one batch)
            return value is not None and not (isinstance(value, float) and value == 1.0)
        return bool(value)  # fast_dev_run: true or a number of batches; overfit_batches: > 0

    return {k: trainer_cfg.get(k) for k in SUBSET_KEYS if part(k, trainer_cfg.get(k))}


def config_summary(cfg: DictConfig) -> dict[str, Any]:
    pick = {
        k: OmegaConf.to_container(cfg[k], resolve=True) if cfg.get(k) else None
        for k in ("model", "optimizer", "scheduler")
    }
    data = OmegaConf.to_container(cfg.data, resolve=True)
    trainer = {k: cfg.trainer.get(k) for k in ("accelerator", "devices", "precision", "max_epochs", "deterministic")}
    return {**pick, "data": data, "trainer": trainer}


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    cli.check_override_types(cfg)
    shared = cfg.ckpt_path == "last" or HydraConfig.get().mode == RunMode.MULTIRUN  # a dir another process may start
    with cli.run_dir_lock(run_dir) if shared else contextlib.nullcontext():
        return fit_and_test(cfg, run_dir)


def extras(cfg: DictConfig) -> None:
    """lightning-hydra-template's extras: the config tree (rich) and the warnings filter."""
    options = cfg.get("extras") or {}
    if options.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if options.get("print_config"):
        from rich import print as rich_print
        from rich.syntax import Syntax
        from rich.tree import Tree

        tree = Tree("config", guide_style="dim")
        for key in ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths", "extras"):
            if cfg.get(key) is not None:
                text = OmegaConf.to_yaml(cfg[key], resolve=True)  # the values this run uses
                tree.add(key).add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
        rest = {k: v for k, v in cfg.items() if not OmegaConf.is_config(v)}
        tree.add("run").add(Syntax(OmegaConf.to_yaml(rest), "yaml", theme="ansi_dark", background_color="default"))
        rich_print(tree)


def fit_and_test(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    extras(cfg)
    resume_from = None
    if cfg.ckpt_path == "last":  # continue a run in its own dir, with its own config
        cfg, resume_from = cli.resume_config(cfg, run_dir)
    elif cfg.ckpt_path is not None:
        resume_from = Path(cfg.ckpt_path).expanduser().resolve()
    elif HydraConfig.get().mode == RunMode.MULTIRUN:  # a sweep started again: keep finished jobs, resume the rest
        kept, resume_from = cli.previous_attempt(cfg, run_dir)
        if kept is not None:
            log.info("this job finished earlier with the same config: kept as it is (%s)", run_dir / "metrics.json")
            return kept
    tags = cfg.get("tags")
    if tags is not None and (not OmegaConf.is_list(tags) or not all(isinstance(t, (str, int)) for t in tags)):
        raise cli.ConfigError(f"tags={tags!r}: give a list, e.g. tags=[lrn,first-try]")
    if cfg.seed is not None and not cli.valid_seed(cfg.seed):
        raise cli.ConfigError(
            f"seed={cfg.seed!r} is not an integer in 0..{cli.MAX_SEED}; give e.g. seed=0, or leave it out"
        )
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**31)
    cfg.seed = seed  # the seed actually used, also when none was given
    L.seed_everything(seed, workers=True)
    # taken as composed: build() fills in what follows the data
    fingerprint, fingerprinted = cli.config_fingerprint(cfg), cli.fingerprinted(cfg)
    datamodule, module, trainer = build(cfg)
    if resume_from is not None:
        cli.check_fits(cli.load_checkpoint(resume_from), module, resume_from)
    datamodule.prepare_data()  # find and decode the data now: a bad source fails before anything is written
    earlier = cli.earlier_seconds(run_dir) if resume_from is not None else 0.0  # a resumed run's time so far

    record: dict[str, Any] = {
        "status": "running",
        "seed": seed,
        "run_dir": str(run_dir),
        "overrides": list(HydraConfig.get().overrides.task),
        "resumed_from": str(resume_from) if resume_from else None,
        "fingerprint": fingerprint,  # a rerun of the sweep keeps this job if it still matches
        "fingerprinted": fingerprinted,  # ... or if every value it hashed is still the same (keys added since aside)
        "git": cli.git_info(Path(HydraConfig.get().runtime.cwd)),
        "versions": {"torch": torch.__version__, "lightning": L.__version__},
        "config": config_summary(cfg),
        "tags": list(cfg.get("tags") or []),
        "subset": subset(cfg.trainer),  # non-empty: trained or evaluated on part of the data only
    }

    def save() -> None:
        if trainer.is_global_zero:  # under SLURM every rank runs this function; one writes
            cli.write_json(run_dir / "metrics.json", record)

    save()
    log.info("run dir: %s", run_dir)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            logger.experiment.add_custom_scalars(LAYOUT)
    start = time.perf_counter()
    try:
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None, weights_only=True
        )
    except SIGTERMException:
        saved = run_dir / "checkpoints" / "last.ckpt"
        seconds = round(earlier + time.perf_counter() - start, 2)
        record.update(status="interrupted", seconds=seconds, steps=trainer.global_step)
        save()
        resume = cli.override("name", cfg.name) if cfg.name else cli.override("run_dir", run_dir)
        print(f"interrupted: saved {saved}; resume with alexnet-train ckpt_path=last {resume}", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)
    record["seconds"] = round(earlier + time.perf_counter() - start, 2)  # training time over every attempt
    if trainer.interrupted:
        raise RuntimeError("training was interrupted before it finished")
    final = scalar_metrics(trainer)
    final.pop("step", None)  # the x axis of the curves, not a metric
    record["epochs"] = int(final.pop("progress/epochs", trainer.current_epoch))
    record["steps"] = int(final.pop("progress/steps", trainer.global_step))
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if checkpoint is not None and checkpoint.best_model_path:
        # from callback_metrics: with spawned DDP processes the callback's own score stays in the workers
        record["best"] = {"val/top1_err": final.get("val/top1_err_best"), "ckpt_path": checkpoint.best_model_path}
    record["data"] = datamodule.describe()  # splits, evaluation protocols, classes, skipped images

    if cfg.test:
        ckpt = cfg.test_ckpt if checkpoint is not None and checkpoint.best_model_path else None
        start = time.perf_counter()
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False)
        record["test_seconds"] = round(time.perf_counter() - start, 2)
        record["test_ckpt"] = trainer.ckpt_path or "weights at the end of training"
        final.update(scalar_metrics(trainer, "test/"))
    record["final"] = dict(sorted(final.items()))
    record["status"] = "finished"
    log_hparams(trainer, hparams_of(cfg, run_dir))
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero:
            logger.experiment.finish()  # Lightning leaves the W&B run open; its offline file is whole only now
    save()
    log.info("metrics: %s", {k: round(v, 3) for k, v in record["final"].items()})
    log.info("done: %s", run_dir)
    return record


@hydra.main(version_base="1.3", config_path="pkg://alexnet_lab.conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    record = cli.run_guarded(train, cfg)
    # what Hydra sweepers (Optuna) minimise; NaN marks a failed trial without stopping the search
    return record["final"].get(cfg.optimized_metric, math.nan) if record else math.nan


def main() -> None:
    cli.prepare_command_line()
    hydra_main()


if __name__ == "__main__":
    main()
