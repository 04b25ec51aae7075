"""``alexnet-eval ckpt_path=...``: test a checkpoint and write metrics.json for the test split (a Hydra app)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from alexnet_lab import checkpointing, cli
from alexnet_lab.errors import ConfigError, build_node, build_nodes, run_guarded
from alexnet_lab.files import sha256, write_json
from alexnet_lab.module import Classifier
from alexnet_lab.runs import subset

log = logging.getLogger(__name__)

# the config's resolvers, here and not in cli: a multirun's worker processes (joblib launcher) import this entry
# point to unpickle the task and resolve their run dirs before it runs
cli.register_resolvers()


class Restored(NamedTuple):
    """A checkpoint rebuilt on this machine, for eval and predict."""

    path: Path
    ckpt: dict[str, Any]
    module: Classifier  # its network with its weights, in the memory format it trained in
    model: DictConfig  # its own model config
    data: DictConfig  # its own data config, with the keys set in today's ``data`` on top


def restore(cfg: DictConfig) -> Restored:
    """The checkpoint at ``cfg.ckpt_path``: read as data (nothing in it runs), rebuilt only as the project's configs
    offer, its weights checked to fit, loaded."""
    path = Path(cfg.ckpt_path).expanduser().resolve()
    ckpt = checkpointing.load_checkpoint(path)
    model_cfg, data_cfg = checkpointing.restored(ckpt, cfg)
    module = Classifier(
        net=build_node(OmegaConf.create({"model": model_cfg}), "model"),
        optimizer=None,
        num_classes=checkpointing.class_count(data_cfg, path),
        channels_last=ckpt["hyper_parameters"]["run_config"].get("channels_last", False),  # as at training time
    )
    checkpointing.check_fits(ckpt, module, path)
    module.load_state_dict(ckpt["state_dict"])
    return Restored(path, ckpt, module, model_cfg, data_cfg)


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    cli.check_override_types(cfg)
    log.info("run dir: %s", run_dir)
    given = Path(cfg.ckpt_path).expanduser().resolve()
    try:  # before it is read: the bytes tested, checked again after
        digest, size = (sha256(given), given.stat().st_size) if given.is_file() else (None, None)
    except OSError as err:
        raise ConfigError(f"checkpoint {given} is unreadable ({err.strerror or type(err).__name__}); pick another "
                          "file") from err  # fmt: skip
    ckpt_path, ckpt, module, model_cfg, data_cfg = restore(cfg)
    trainer = build_node(
        cfg, "trainer", callbacks=build_nodes(cfg, "callbacks"), logger=build_nodes(cfg, "logger") or False
    )
    start = time.perf_counter()
    datamodule = build_node(OmegaConf.create({"data": data_cfg}), "data")
    trainer.test(module, datamodule=datamodule, verbose=False)
    if not ckpt_path.is_file() or sha256(ckpt_path) != digest:
        raise ConfigError(f"checkpoint {ckpt_path} changed while it was tested (is its run still training?); "
                          "evaluate it again once nothing writes it")  # fmt: skip
    record = {
        "status": "finished",
        "ckpt_path": str(ckpt_path),
        "ckpt_sha256": digest,  # which weights, whatever the file is called now (the report matches on it)
        "ckpt_bytes": size,  # its size: the report hashes a job's last.ckpt only when the sizes agree
        "run_dir": str(run_dir),
        "overrides": list(HydraConfig.get().overrides.task),
        "seconds": round(time.perf_counter() - start, 2),
        "epochs": ckpt.get("epoch"),
        "steps": ckpt.get("global_step"),
        "final": {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("test/")},
        "data": datamodule.describe(),  # the split tested and, for ImageNet, its evaluation views
        "subset": subset(cfg.trainer),  # non-empty: only part of the split was tested (e.g. limit_test_batches)
        "config": {"model": OmegaConf.to_container(model_cfg), "data": OmegaConf.to_container(data_cfg)},
    }
    write_json(run_dir / "metrics.json", record)
    log.info("metrics: %s", {k: round(v, 3) for k, v in record["final"].items()})
    log.info("done: %s", run_dir)
    return record


@hydra.main(version_base="1.3", config_path="pkg://alexnet_lab.conf", config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    cli.quiet_upstream()  # here too: a joblib launcher's worker processes run this function, not main()
    run_guarded(evaluate, cfg)


def main() -> None:
    cli.prepare_command_line()
    hydra_main()


if __name__ == "__main__":
    main()
