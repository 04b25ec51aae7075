"""Every config composes; experiments and the SLURM path say what they promise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize(
    "group", ["model", "data", "trainer", "optimizer", "scheduler", "logger", "experiment", "debug"]
)
def test_every_option_composes(group: str, composed) -> None:
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert options
    for option in options:
        cfg = composed(f"{group}={option}")
        assert cfg.data.num_classes is None, option  # follows the data: counted when the run is built


def test_every_model_instantiates_with_its_config(composed) -> None:
    # alexnet: 60,965,224 with 1000 classes, less fc8 (4,097,000) plus a 10-way fc8 (40,970)
    # alexnet_torchvision: torchvision's 61,100,840 less its fc8 (4,097,000) plus a 10-way one (40,970)
    expected = {
        "alexnet": 56_909_194,
        "alexnet_cifar": 9_638_474,
        "cudaconvnet_18pct": 89_578,
        "cudaconvnet_19pct": 89_578,
        "cudaconvnet_11pct": 2_112_970,
        "cudaconvnet_13pct": 1_116_490,
        "alexnet_cifar_2gpu": 8_421_962,
        "alexnet_cifar_1gpu": 7_369_130,
        "alexnet_1gpu": 55_742_282,
        "alexnet_torchvision": 57_044_810,
    }
    for name, params in expected.items():
        net = instantiate(composed(f"model={name}", "data.num_classes=10").model)
        assert sum(p.numel() for p in net.parameters()) == params, name


def test_slurm_launcher_runs_one_task_per_gpu(composed) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = composed("hydra/launcher=slurm", "trainer=slurm", "trainer.num_nodes=2", "trainer.devices=4")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    resolved = OmegaConf.merge(OmegaConf.masked_copy(cfg, ["trainer"]), {"l": cfg.hydra.launcher})
    assert (resolved.l.nodes, resolved.l.tasks_per_node, resolved.l.gpus_per_node) == (2, 4, 4)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 2


MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
DEBUG = sorted(p.stem for p in (CONF / "debug").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated CIFAR-10 batches and a 3-class ImageNet-style tree, so data.num_classes can follow the data."""
    from conftest import write_batches, write_jpeg_tree

    root = tmp_path_factory.mktemp("tiny")
    return {
        "cifar10": write_batches(root / "cifar", n_train=100, n_test=20).parent,
        "imagenet": write_jpeg_tree(root / "imagenet", ["n01440764", "n01443537", "n01484850"], train=12, val=2),
    }


def build_on_tiny_data(composed, tiny_data: dict, tmp_path: Path, *overrides: str) -> tuple:
    """DataModule, LightningModule (network, optimizer, scheduler) and Trainer (callbacks, loggers) built as
    alexnet-train builds them, on tiny generated data."""
    from omegaconf import open_dict, read_write

    from alexnet_lab.train import build

    cfg = composed(*overrides)
    dataset = "imagenet" if cfg.data._target_.endswith("ImageNetDataModule") else "cifar10"
    cfg = composed(*overrides, f"data.path={tiny_data[dataset]}", f"data.cache_dir={tmp_path / 'cache'}")
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return build(cfg)


def build_or_config_error(composed, tiny_data: dict, tmp_path: Path, *overrides: str) -> str:
    """ "built", or the one-line ConfigError building ends with (anything else fails)."""
    from alexnet_lab.errors import ConfigError

    try:
        build_on_tiny_data(composed, tiny_data, tmp_path, *overrides)
    except ConfigError as err:
        assert "\n" not in str(err), overrides
        return str(err)
    return "built"


def test_every_model_and_data_builds_or_says_why_in_one_line(composed, tiny_data: dict, tmp_path: Path) -> None:
    outcomes = {
        (m, d): build_or_config_error(composed, tiny_data, tmp_path, f"model={m}", f"data={d}")
        for m in MODELS
        for d in DATA
    }
    # each network builds with the data it was made for
    for model in ("alexnet", "alexnet_1gpu", "alexnet_torchvision"):
        assert outcomes[(model, "imagenet")] == "built", model
    for model in (
        "alexnet_cifar",
        "alexnet_cifar_1gpu",
        "alexnet_cifar_2gpu",
        "cudaconvnet_18pct",
        "cudaconvnet_19pct",
    ):
        assert outcomes[(model, "cifar10")] == "built", model
    # and says in one line when it cannot take the other's images
    assert outcomes[("alexnet", "cifar10")].startswith("model AlexNet cannot take the data's 32x32 images")
    assert outcomes[("cudaconvnet_11pct", "cifar10")].startswith("model CudaConvnetLocal cannot take the data's 32x32")
    assert outcomes[("cudaconvnet_18pct", "imagenet")].startswith(
        "model CudaConvnet18pct cannot take the data's 224x224"
    )


def test_every_debug_option_builds_with_both_datasets(composed, tiny_data: dict, tmp_path: Path) -> None:
    for data, model in (("cifar10", "cudaconvnet_18pct"), ("imagenet", "alexnet")):
        for debug in DEBUG:
            overrides = (f"data={data}", f"model={model}", f"debug={debug}")
            assert build_or_config_error(composed, tiny_data, tmp_path, *overrides) == "built", overrides


def test_every_experiment_builds_or_says_why_in_one_line(composed, tiny_data: dict, tmp_path: Path) -> None:
    outcomes = {e: build_or_config_error(composed, tiny_data, tmp_path, f"experiment={e}") for e in EXPERIMENTS}
    gpu = [e for e in EXPERIMENTS if e.startswith("imagenet_")]  # trainer=gpu: this machine may have none
    for experiment, outcome in outcomes.items():
        if experiment in gpu and outcome != "built":
            assert outcome.startswith("trainer"), (experiment, outcome)
        else:
            assert outcome == "built", (experiment, outcome)


@pytest.mark.parametrize(
    ("overrides", "units"),
    [
        (["model=cudaconvnet_18pct"], ("pixel", 1 / 255)),  # its init is calibrated for 0-255 pixels less the mean
        (["model=cudaconvnet_19pct"], ("pixel", 1 / 255)),  # ... and so are the configs built on it
        (["model=cudaconvnet_13pct"], ("pixel", 1 / 255)),
        (["model=alexnet_cifar"], ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])),  # the data's own default
        (["model=cudaconvnet_18pct", "experiment=tutorial_cifar10"], (None, None)),  # an experiment still decides
        (["model=cudaconvnet_18pct", "data.mean=channel"], ("channel", 1 / 255)),  # and so does the command line
    ],
)
def test_the_data_feeds_the_input_units_a_model_config_asks_for(composed, overrides, units) -> None:
    mean, std = units
    cfg = composed(*overrides)
    assert OmegaConf.to_container(cfg.data, resolve=True)["mean"] == mean
    assert cfg.data.std is None if std is None else OmegaConf.to_object(cfg.data)["std"] == pytest.approx(std)


def training_setup(composed, tiny_data: dict, tmp_path: Path, *overrides: str) -> dict:
    """What a run of these overrides trains with, read off the objects alexnet-train builds (not the YAML)."""
    datamodule, module, trainer = build_on_tiny_data(composed, tiny_data, tmp_path, *overrides)
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
    groups = {(g["lr"], g.get("momentum"), g["weight_decay"]) for g in optimizer.param_groups}
    return {
        "net": type(module.net).__name__,
        "params": sum(p.numel() for p in module.net.parameters()),
        "optimizer": type(optimizer).__name__,
        "groups": groups,
        "scheduler": type(scheduler).__name__ if scheduler else None,
        "batch_size": datamodule.batch_size,
        "max_epochs": trainer.max_epochs,
        "precision": trainer.precision,
        "data": datamodule,
        "scheduler_object": scheduler,
    }


def test_tutorial_experiment_trains_like_the_keras_run(composed, tiny_data: dict, tmp_path: Path) -> None:
    run = training_setup(composed, tiny_data, tmp_path, "experiment=tutorial_cifar10")
    assert (run["net"], run["optimizer"], run["groups"], run["scheduler"]) == (
        "AlexNetCIFAR",
        "Adam",
        {(1e-3, None, 0)},
        None,
    )
    assert (run["batch_size"], run["max_epochs"], run["data"].val_size) == (32, 5, 0)
    assert (run["data"].crop_padding, run["data"].hflip) == (0, False)  # no augmentation, as in the tutorial
    run["data"].prepare_data()
    run["data"].setup("test")
    batch = next(iter(run["data"].unaugmented_batches("test", torch.device("cpu"))))
    assert 0.0 <= float(batch.inputs.min()) and float(batch.inputs.max()) <= 1.0  # Keras' x / 255, nothing subtracted


def test_paper_experiment_trains_with_the_papers_recipe(composed, tiny_data: dict, tmp_path: Path) -> None:
    run = training_setup(composed, tiny_data, tmp_path, "experiment=paper_cifar10")
    assert (run["optimizer"], run["groups"], run["batch_size"]) == ("SGD", {(0.01, 0.9, 5e-4)}, 128)
    assert run["scheduler"] == "ReduceLROnPlateau" and run["scheduler_object"].factor == 0.1
    assert (run["data"].crop_padding, run["data"].hflip) == (4, True)


def test_imagenet_paper_experiment_trains_with_the_2012_recipe(composed, tiny_data: dict, tmp_path: Path) -> None:
    run = training_setup(composed, tiny_data, tmp_path, "experiment=imagenet_paper", "trainer.accelerator=cpu")
    # 60,965,224 weights with 1000 classes (the paper's net), here with the tiny tree's 3
    assert (run["net"], run["params"]) == ("AlexNet", 60_965_224 - 4097 * 997)
    assert (run["optimizer"], run["groups"], run["batch_size"]) == ("SGD", {(0.01, 0.9, 5e-4)}, 128)
    assert run["scheduler"] == "ReduceLROnPlateau" and run["scheduler_object"].factor == 0.1
    assert (run["max_epochs"], run["precision"]) == (90, "bf16-mixed")
    data = run["data"]
    assert (data.stored_size, data.resize_size, data.crop_size, data.train_crop, data.hflip) == (
        256,
        256,
        224,
        "random",
        True,
    )
    assert data.protocols == {"val": "center", "test": "ten_crop"} and data.pca_std == 0.1
    assert data.mean == "pixel" and data.std == pytest.approx(1 / 255)  # the mean image, 0-255 units


def test_imagenet_torchvision_experiment_trains_with_torchvisions_recipe(
    composed, tiny_data: dict, tmp_path: Path
) -> None:
    run = training_setup(composed, tiny_data, tmp_path, "experiment=imagenet_torchvision", "trainer.accelerator=cpu")
    assert (run["net"], run["params"]) == ("AlexNet", 61_100_840 - 4097 * 997)  # torchvision's own count, 3 classes
    assert (run["optimizer"], run["groups"], run["batch_size"], run["max_epochs"]) == (
        "SGD",
        {(0.01, 0.9, 1e-4)},
        256,
        90,
    )
    assert run["scheduler"] == "StepLR" and (run["scheduler_object"].step_size, run["scheduler_object"].gamma) == (
        30,
        0.1,
    )
    assert (run["data"].train_crop, run["data"].pca_std) == ("random_resized", 0.0)
    assert run["data"].protocols == {"val": "center", "test": "center"}
    assert list(run["data"].mean) == [0.485, 0.456, 0.406] and list(run["data"].std) == [0.229, 0.224, 0.225]


def test_alexnet_normalises_with_the_papers_constants(composed) -> None:
    from alexnet_lab.models.layers import LRN

    net = instantiate(composed("model=alexnet").model, num_classes=10)
    (first, *_) = [m for m in net.modules() if isinstance(m, LRN)]
    a = torch.rand(1, 16, 3, 3) * 30  # large enough that the sum matters at alpha 1e-4
    # b_i = a_i / (k + alpha * sum of a_j^2 over the 5 channels around i) ^ beta with k 2, alpha 1e-4, beta 0.75,
    # within each tower's half of the channels (groups=2)
    halves = [h**2 for h in a.split(8, dim=1)]
    window = torch.cat(
        [F.avg_pool3d(h.unsqueeze(1), (5, 1, 1), stride=1, padding=(2, 0, 0)).squeeze(1) * 5 for h in halves], 1
    )
    assert torch.allclose(first(a), a / (2 + 1e-4 * window) ** 0.75, rtol=1e-5)
    assert not torch.allclose(first(a), a / 2**0.75, rtol=1e-3)  # the sum acts: not a constant rescaling
