"""``alexnet-train``: train one network on one dataset, test it, and write metrics.json (a Hydra app)."""

from __future__ import annotations

import contextlib
import logging
import math
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
from omegaconf import DictConfig, OmegaConf

from alexnet_lab import checkpointing, cli, runs
from alexnet_lab.data import ClassificationData
from alexnet_lab.errors import ConfigError, build_node, build_nodes, run_guarded, use_node
from alexnet_lab.module import Classifier

log = logging.getLogger(__name__)

# the config's resolvers, here and not in cli: a multirun's worker processes (joblib launcher) import this entry
# point to unpickle the task and resolve their run dirs before it runs
cli.register_resolvers()

FINAL_METRICS = ("val/top1_err", "val/top5_err", "test/top1_err", "test/top5_err")


def build(cfg: DictConfig, *run_callbacks: L.Callback) -> tuple[ClassificationData, Classifier, L.Trainer]:
    """DataModule, LightningModule and Trainer (with the configured callbacks, then ``run_callbacks``) from a
    composed config. A value a library refuses while a node is built (or, for the optimizer and scheduler, first
    used) is a one-line :class:`ConfigError` naming it."""
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    batch = cfg.data.get("batch_size")
    if isinstance(devices, int) and isinstance(nodes, int) and isinstance(batch, int) and batch % (devices * nodes):
        raise ConfigError(
            f"data.batch_size={batch} (the global batch) does not split over {devices * nodes} devices; "
            f"use a multiple of {devices * nodes}"
        )
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    searching = hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN and runs.optuna_sweeper(hydra_cfg)
    runs.check_nothing_chosen_on_test(cfg, searching=searching)
    if searching:
        runs.check_search_metric(cfg)
    datamodule = build_node(cfg, "data")
    if not isinstance(datamodule, ClassificationData):
        raise ConfigError(f"data._target_={cfg.data.get('_target_')} does not keep the data contract "
                          "(alexnet_lab.data.ClassificationData); pick data=cifar10 or data=imagenet")  # fmt: skip
    classes = datamodule.num_classes  # data.num_classes, or counted from the data (decoding or listing it, once)
    given = OmegaConf.select(cfg, "model.num_classes", default=None)
    if given is not None and given != classes:
        raise ConfigError(f"model.num_classes={given} but the data has {classes} classes; leave model.num_classes "
                          "out (it follows the data), or set data.num_classes / data.classes")  # fmt: skip
    net = build_node(cfg, "model", num_classes=classes)
    check_input(net, datamodule.input_shape, cfg)  # before compile=true compiles it
    example = torch.zeros(1, *datamodule.input_shape)
    run_config = OmegaConf.to_container(cfg, resolve=True)  # what eval and predict rebuild the network from
    run_config["data"]["num_classes"] = run_config["model"]["num_classes"] = classes
    optimizer = build_node(cfg, "optimizer")
    scheduler = build_node(cfg, "scheduler") if cfg.get("scheduler") else None
    module = use_node(  # torch.compile refuses an unknown backend name here
        cfg,
        "compile",
        lambda: Classifier(
            net=net,
            optimizer=optimizer,
            scheduler=scheduler,
            num_classes=classes,
            channels_last=cfg.channels_last,
            compile=cfg.compile,
            run_config=run_config,
        ),
    )
    if not cfg.compile:  # the model summary's sizes and FLOPs (a compiled net would compile for it first)
        module.example_input_array = example
    # partials: torch checks their values only when they are called
    use_node(cfg, "optimizer", module.build_optimizer)
    if cfg.get("scheduler"):
        use_node(cfg, "scheduler", module.configure_optimizers)
    callbacks = build_nodes(cfg, "callbacks") + list(run_callbacks)
    trainer = build_node(cfg, "trainer", callbacks=callbacks, logger=build_nodes(cfg, "logger") or False)
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
        raise ConfigError(
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
    real final val/test errors already logged. Lightning's ``log_hyperparams(params, metrics, step)`` would log
    the metrics once more and cannot mark which columns the tab shows first; Lightning's answer is to write the
    summary with the writer directly (Lightning-AI/pytorch-lightning#1111), as its own ``log_hyperparams`` does.
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


def extras(cfg: DictConfig) -> None:
    """lightning-hydra-template's extras: the config tree (rich) and the warnings filter."""
    options = cfg.get("extras") or {}
    if options.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if options.get("print_config"):
        from rich.console import Console
        from rich.syntax import Syntax
        from rich.tree import Tree

        tree = Tree("config", guide_style="dim")
        for key in ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths", "extras"):
            if cfg.get(key) is not None:
                text = OmegaConf.to_yaml(cfg[key], resolve=True)  # the values this run uses
                tree.add(key).add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
        rest = {k: v for k, v in cfg.items() if not OmegaConf.is_config(v)}
        tree.add("run").add(Syntax(OmegaConf.to_yaml(rest), "yaml", theme="ansi_dark", background_color="default"))
        console = Console()  # a terminal's width; written to a file or a pipe, wide enough not to cut paths
        (console if console.is_terminal else Console(width=200)).print(tree)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train and test one run in ``run_dir``, keep its ``metrics.json`` up to date, and return that record."""
    cli.check_override_types(cfg)
    shared = cfg.ckpt_path == "last" or HydraConfig.get().mode == RunMode.MULTIRUN  # a dir another process may start
    with runs.run_dir_lock(run_dir) if shared else contextlib.nullcontext():
        extras(cfg)
        start = runs.start(cfg, run_dir)
        if start.kept is not None:
            log.info("this job finished earlier with the same config: kept as it is (%s)", run_dir / "metrics.json")
            return start.kept
        cfg, resume_from = start.cfg, start.resume_from
        L.seed_everything(runs.settle_seed(cfg), workers=True)
        record = runs.RunRecord(cfg, run_dir, resume_from)  # the config as composed: build() fills in the data's
        datamodule, module, trainer = build(cfg, record)
        if resume_from is not None:
            checkpointing.check_fits(checkpointing.load_checkpoint(resume_from), module, resume_from)
        datamodule.prepare_data()  # find and decode the data now: a bad source fails before anything is written
        record.built(datamodule.num_classes, writer=trainer.is_global_zero)
        log.info("run dir: %s", run_dir)
        add_custom_scalars(trainer)
        with record.training(trainer):
            ckpt_path = str(resume_from) if resume_from else None
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if trainer.interrupted:
            raise RuntimeError("training was interrupted before it finished")
        record.data["epochs"], record.data["steps"] = record.progress(trainer)
        final = trained_metrics(trainer, record.data)
        record.data["data"] = datamodule.describe()  # splits, evaluation protocols, classes, skipped images
        if cfg.test:
            final.update(test(cfg, trainer, module, datamodule, record.data))
        record.data["final"] = dict(sorted(final.items()))
        log_hparams(trainer, hparams_of(cfg, run_dir))
        finish_loggers(trainer)
        record.save(status="finished")
        log.info("metrics: %s", {k: round(v, 3) for k, v in record.data["final"].items()})
        log.info("done: %s", run_dir)
        return record.data


def add_custom_scalars(trainer: L.Trainer) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            logger.experiment.add_custom_scalars(LAYOUT)


def finish_loggers(trainer: L.Trainer) -> None:
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero:
            logger.experiment.finish()  # Lightning leaves the W&B run open; its offline file is whole only now


def trained_metrics(trainer: L.Trainer, record: dict[str, Any]) -> dict[str, float]:
    """The metrics at the end of training; the best checkpoint goes into ``record``."""
    final = scalar_metrics(trainer)
    final.pop("step", None)  # the x axis of the curves, not a metric
    if best := best_checkpoint(trainer):
        # from callback_metrics: with spawned DDP processes the callback's own score stays in the workers
        record["best"] = {"val/top1_err": final.get("val/top1_err_best"), "ckpt_path": best}
    return final


def best_checkpoint(trainer: L.Trainer) -> str | None:
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    return checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None


def test(cfg: DictConfig, trainer: L.Trainer, module: Classifier, datamodule: L.LightningDataModule,
         record: dict[str, Any]) -> dict[str, float]:  # fmt: skip
    """Test once: the best checkpoint's weights (``test_ckpt``) if one was kept, else the final weights."""
    best = best_checkpoint(trainer)  # named: with two ModelCheckpoints Lightning's "best" means the first one's
    ckpt = (best if cfg.test_ckpt == "best" else cfg.test_ckpt) if best else None
    start = time.perf_counter()
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False)
    record["test_seconds"] = round(time.perf_counter() - start, 2)
    record["test_ckpt"] = trainer.ckpt_path or "weights at the end of training"
    return scalar_metrics(trainer, "test/")


@hydra.main(version_base="1.3", config_path="pkg://alexnet_lab.conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    cli.quiet_upstream()  # here too: a joblib launcher's worker processes run this function, not main()
    record = run_guarded(train, cfg)
    # what Hydra sweepers (Optuna) minimise; NaN marks a failed job, and other sweeps go on to the next one
    value = record["final"].get(cfg.optimized_metric, math.nan) if record else math.nan
    hydra_cfg = HydraConfig.get()
    if math.isnan(value) and hydra_cfg.mode == RunMode.MULTIRUN and runs.optuna_sweeper(hydra_cfg):
        # Optuna 2.10 stops the whole search when told NaN; a trial that raises is told FAIL and the search goes
        # on (hydra.sweeper.max_failure_rate)
        raise RuntimeError(f"trial failed: {trial_failure(record, cfg.optimized_metric, hydra_cfg.runtime.output_dir)}")
    return value


def trial_failure(record: dict | None, metric: str, run_dir: str) -> str:
    """Why a search's trial has no value: the run failed (its record says why), or it finished without the figure."""
    if not record:
        return f"{run_dir}/metrics.json says why"
    if metric not in record["final"]:
        reached = " (it never reached its milestone)" if metric.startswith("milestone/") else ""
        return f"the run finished but recorded no {metric}{reached}"
    return f"its {metric} is NaN"


def main() -> None:
    cli.prepare_command_line()
    hydra_main()


if __name__ == "__main__":
    main()
