"""Every config composes; experiments and the SLURM path say what they promise."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_tutorial_experiment_is_the_keras_run(composed) -> None:
    cfg = composed("experiment=tutorial_cifar10")
    assert cfg.model._target_.endswith("AlexNetCIFAR") and cfg.model.norm == "batchnorm"
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.data.val_size) == (32, 5, 0)
    assert (cfg.data.crop_padding, cfg.data.hflip, cfg.data.mean, cfg.data.std) == (0, False, None, None)
    assert not cfg.scheduler and cfg.test_ckpt == "last"


def test_paper_experiment_uses_the_papers_recipe(composed) -> None:
    cfg = composed("experiment=paper_cifar10")
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.01, 0.9, 5e-4)
    assert cfg.scheduler._target_.endswith("ReduceLROnPlateau") and cfg.scheduler.factor == 0.1
    assert cfg.data.batch_size == 128 and cfg.data.crop_padding == 4 and cfg.data.hflip


def test_imagenet_paper_experiment_is_the_2012_recipe(composed) -> None:
    cfg = composed("experiment=imagenet_paper")
    assert cfg.data._target_.endswith("ImageNetDataModule") and cfg.data.num_classes is None
    assert cfg.model._target_.endswith(".AlexNet") and (cfg.model.groups, cfg.model.norm, cfg.model.init) == (
        2,
        "lrn",
        "paper",
    )
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.01, 0.9, 5e-4)
    assert cfg.scheduler._target_.endswith("ReduceLROnPlateau") and cfg.scheduler.factor == 0.1
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.trainer.precision) == (128, 90, "bf16-mixed")
    assert (cfg.data.resize, cfg.data.image_size, cfg.data.crop_size, cfg.data.train_crop) == (256, 256, 224, "random")
    assert (cfg.data.mean, cfg.data.pca_std, cfg.data.hflip) == ("pixel", 0.1, True)
    assert cfg.data.std == pytest.approx(1 / 255) and cfg.data.test_protocol == "ten_crop"
    assert sum(p.numel() for p in instantiate(cfg.model, num_classes=1000).parameters()) == 60_965_224


def test_imagenet_torchvision_experiment_is_torchvisions_recipe(composed) -> None:
    cfg = composed("experiment=imagenet_torchvision", "data.classes=100", "data.num_classes=100")
    assert cfg.model._target_ == "torchvision.models.alexnet" and cfg.model.num_classes == 100
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.01, 0.9, 1e-4)
    assert cfg.scheduler._target_.endswith("StepLR") and (cfg.scheduler.step_size, cfg.scheduler.gamma) == (30, 0.1)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.data.train_crop) == (256, 90, "random_resized")
    assert list(cfg.data.mean) == [0.485, 0.456, 0.406] and list(cfg.data.std) == [0.229, 0.224, 0.225]
    assert (cfg.data.pca_std, cfg.data.val_protocol, cfg.data.test_protocol) == (0.0, "center", "center")
    net = instantiate(composed("experiment=imagenet_torchvision", "data.num_classes=1000").model)
    assert sum(p.numel() for p in net.parameters()) == 61_100_840  # torchvision's own count


def test_alexnet_lrn_defaults_are_the_papers_constants(composed) -> None:
    lrn = composed("model=alexnet").model.lrn
    assert dict(lrn) == {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}


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


def build_or_config_error(composed, tiny_data: dict, tmp_path: Path, *overrides: str) -> str:
    """Build DataModule, network, LightningModule, optimizer, scheduler, callbacks and Trainer as alexnet-train
    does, on tiny generated data; "built", or the one-line ConfigError it ends with (anything else fails)."""
    from omegaconf import open_dict, read_write

    from alexnet_lab.errors import ConfigError
    from alexnet_lab.train import build

    cfg = composed(*overrides)
    dataset = "imagenet" if cfg.data._target_.endswith("ImageNetDataModule") else "cifar10"
    cfg = composed(*overrides, f"data.path={tiny_data[dataset]}", f"data.cache_dir={tmp_path / 'cache'}")
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        build(cfg)
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
