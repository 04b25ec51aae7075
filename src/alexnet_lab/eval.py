"""``alexnet-eval ckpt_path=...``: test a checkpoint and write metrics.json for the test split (a Hydra app)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from alexnet_lab import cli
from alexnet_lab.module import Classifier
from alexnet_lab.train import subset

log = logging.getLogger(__name__)

# the config's resolvers, here and not in cli: a multirun's worker processes (joblib launcher) import this entry
# point to unpickle the task and resolve their run dirs before it runs
cli.register_resolvers()


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    cli.check_override_types(cfg)
    ckpt_path = Path(cfg.ckpt_path).expanduser().resolve()
    ckpt = cli.load_checkpoint(ckpt_path)
    # the checkpoint's own network and data config (normalisation, classes), with any key set in eval.yaml on top
    model_cfg, data_cfg = cli.restored(ckpt, cfg)
    built = OmegaConf.create({"model": model_cfg, "data": data_cfg})
    module = Classifier(
        net=cli.build_node(built, "model"),
        optimizer=None,
        num_classes=cli.class_count(data_cfg, ckpt_path),
        channels_last=ckpt["hyper_parameters"]["run_config"].get("channels_last", False),  # as at training time
    )
    cli.check_fits(ckpt, module, ckpt_path)
    module.load_state_dict(ckpt["state_dict"])
    trainer = instantiate(cfg.trainer, logger=[instantiate(c) for c in cfg.logger.values() if c] or False)
    start = time.perf_counter()
    datamodule = cli.build_node(built, "data")
    trainer.test(module, datamodule=datamodule, verbose=False)
    record = {
        "status": "finished",
        "ckpt_path": str(ckpt_path),
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
    cli.write_json(run_dir / "metrics.json", record)
    log.info("metrics: %s", {k: round(v, 3) for k, v in record["final"].items()})
    return record


@hydra.main(version_base="1.3", config_path="pkg://alexnet_lab.conf", config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    cli.run_guarded(evaluate, cfg)


def main() -> None:
    cli.prepare_command_line()
    hydra_main()


if __name__ == "__main__":
    main()
