"""CIFAR-10 DataModule: every source form, the cache, the splits, and the errors for bad data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES, make_images, sample_ids, tar_folder, write_batches, write_tree

from alexnet_lab.data import CIFAR10DataModule, DataError
from alexnet_lab.data import cifar10 as cifar10_module


def datamodule(path: Path, cache: Path, **kwargs) -> CIFAR10DataModule:
    kwargs.setdefault("val_size", 100)
    dm = CIFAR10DataModule(path=str(path), cache_dir=str(cache), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_official_batches(batches_dir: Path, tmp_path: Path) -> None:
    dm = datamodule(batches_dir, tmp_path / "cache")
    assert dm.classes == CLASSES
    sizes = {k: (v[0].shape, v[0].dtype, v[1].dtype) for k, v in dm.splits.items()}
    assert sizes == {
        "train": ((400, 3, 32, 32), torch.uint8, torch.int64),
        "val": ((100, 3, 32, 32), torch.uint8, torch.int64),
        "test": ((100, 3, 32, 32), torch.uint8, torch.int64),
    }
    ids = {k: set(sample_ids(v[0])) for k, v in dm.splits.items()}
    assert len(ids["train"]) == 400 and len(ids["val"]) == 100
    assert ids["train"].isdisjoint(ids["val"])
    assert ids["train"] | ids["val"] == set(range(500))  # nothing lost, nothing from test
    assert ids["test"] == set(range(500, 600))


def test_split_is_fixed_by_split_seed_only(batches_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    a = datamodule(batches_dir, tmp_path / "c")
    torch.manual_seed(2)  # a different run seed
    b = datamodule(batches_dir, tmp_path / "c")
    c = datamodule(batches_dir, tmp_path / "c", split_seed=1)
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])


def test_val_size_zero_validates_on_test(batches_dir: Path, tmp_path: Path) -> None:
    dm = datamodule(batches_dir, tmp_path / "c", val_size=0)
    assert dm.splits["val"][0] is dm.splits["test"][0]
    assert len(dm.splits["train"][1]) == 500


def test_tree_and_archives_decode_to_the_same_tensors(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree")
    from_tree = datamodule(tree, tmp_path / "c1", val_size=10)
    archive = tar_folder(tree, tmp_path / "cifar10-png.tar.gz", arcname="cifar10-png")
    from_archive = datamodule(archive, tmp_path / "c2", val_size=10)
    nested = datamodule(tmp_path, tmp_path / "c3", val_size=10)  # tmp_path/tree is found one level down
    assert from_tree.classes == from_archive.classes == CLASSES
    for split in ("train", "val", "test"):
        for other in (from_archive, nested):
            assert torch.equal(from_tree.splits[split][0], other.splits[split][0])
            assert torch.equal(from_tree.splits[split][1], other.splits[split][1])
    assert len(from_tree.splits["test"][1]) == 50
    _, labels = make_images(250, seed=0)  # what write_tree wrote: images 200..249 are the test split
    assert (
        from_tree.splits["test"][1].bincount(minlength=10).tolist() == np.bincount(labels[200:], minlength=10).tolist()
    )


def test_official_archive(tmp_path: Path) -> None:
    folder = write_batches(tmp_path / "src")
    archive = tar_folder(folder, tmp_path / "cifar-10-python.tar.gz", arcname="cifar-10-batches-py")
    a = datamodule(archive, tmp_path / "c1")
    b = datamodule(folder.parent, tmp_path / "c2")
    assert torch.equal(a.splits["train"][0], b.splits["train"][0])


def test_jpeg_tree(tmp_path: Path) -> None:
    dm = datamodule(write_tree(tmp_path / "t", fmt="JPEG"), tmp_path / "c", val_size=10)
    assert dm.splits["train"][0].shape == (190, 3, 32, 32)


def test_cache_is_written_once_and_reused(batches_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = datamodule(batches_dir, tmp_path / "c")
    caches = list((tmp_path / "c").glob("cifar10-uint8-*.pt"))
    assert len(caches) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache exists")

    monkeypatch.setattr(cifar10_module, "read_source", no_decoding)
    second = datamodule(batches_dir, tmp_path / "c")
    assert torch.equal(first.splits["train"][0], second.splits["train"][0])


def test_loaders_yield_normalised_float_batches(batches_dir: Path, tmp_path: Path) -> None:
    dm = datamodule(batches_dir, tmp_path / "c", batch_size=64, eval_batch_size=30)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (64,)
    assert len(dm.train_dataloader()) == 400 // 64  # drop_last for training
    assert len(dm.val_dataloader()) == 4 and sum(len(b[1]) for b in dm.val_dataloader()) == 100


# ----------------------------------------------------------------------------------------------- errors


def test_no_data_names_the_path_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError,
        match=r"no CIFAR-10 data at .*empty.*set data.path \(once per machine: conf/local/default.yaml, or ALEXNET_CIFAR10\)",
    ):
        datamodule(tmp_path / "empty", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_corrupt_batch_file(batches_dir: Path, tmp_path: Path) -> None:
    (batches_dir / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="corrupt CIFAR-10 batch file .*data_batch_3"):
        datamodule(batches_dir, tmp_path / "c")
    assert not list((tmp_path).glob("c/*.pt"))


def test_missing_batch_file(batches_dir: Path, tmp_path: Path) -> None:
    (batches_dir / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="lacks test_batch"):
        datamodule(batches_dir, tmp_path / "c")


def test_truncated_archive(tmp_path: Path) -> None:
    archive = tar_folder(write_batches(tmp_path / "src"), tmp_path / "c10.tar.gz", arcname="cifar-10-batches-py")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated archive .*c10.tar.gz"):
        datamodule(archive, tmp_path / "c")


def test_empty_class_folder(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", n_train=40, n_test=20)
    for f in (tree / "train" / "cat").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="class folder .*train/cat holds no PNG or JPEG images"):
        datamodule(tree, tmp_path / "c", val_size=5)


def test_undecodable_and_wrong_size_images(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", n_train=40, n_test=20)
    victim = min((tree / "train" / "dog").iterdir())
    victim.write_bytes(b"not an image")
    with pytest.raises(DataError, match=f"cannot decode image .*{victim.name}"):
        datamodule(tree, tmp_path / "c", val_size=5)
    from PIL import Image

    Image.new("RGB", (64, 48)).save(victim, format="PNG")
    with pytest.raises(DataError, match=f"image .*{victim.name} is 64x48, CIFAR-10 images are 32x32"):
        datamodule(tree, tmp_path / "c", val_size=5)


def test_class_count_mismatch(batches_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data has 10 classes, data.num_classes is 100"):
        datamodule(batches_dir, tmp_path / "c", num_classes=100)


def test_meta_without_label_names_is_corrupt(batches_dir: Path, tmp_path: Path) -> None:
    (batches_dir / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps({b"other": 1}))
    with pytest.raises(DataError, match="batches.meta: it names no classes"):
        datamodule(batches_dir, tmp_path / "c")


def test_cuda_convnet_units_subtract_the_training_mean_image(batches_dir: Path, tmp_path: Path) -> None:
    """data.mean=pixel with std 1/255: raw 0-255 pixels less the per-pixel mean of the training split (not val)."""
    dm = datamodule(batches_dir, tmp_path / "c", mean="pixel", std=1 / 255, crop_padding=0, hflip=False)
    train = dm.splits["train"][0].double()
    x, _ = next(iter(dm.val_dataloader()))
    want = dm.splits["val"][0][: len(x)].double() - train.mean(dim=0)
    torch.testing.assert_close(x.double(), want, atol=2e-3, rtol=0)
    assert x.abs().max() > 50  # 0-255 units, not unit variance
    per_channel = datamodule(batches_dir, tmp_path / "c", mean="channel", std=1 / 255).normalize.mean
    torch.testing.assert_close(per_channel.flatten().double(), train.mean(dim=(0, 2, 3)) / 255, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mean": "image"}, "data.mean='image': use pixel, channel, three values or null"),
        ({"mean": "pixel", "std": None}, "data.mean and data.std go together"),
        ({"crop_size": 40}, "data.crop_size=40 must be in [1, 32]"),
        ({"train_crop": "corner"}, "data.train_crop='corner': use random or center"),
        ({"test_protocol": "five"}, "data.test_protocol='five': use one of center, ten_crop"),
    ],
)
def test_bad_normalisation_and_crop_settings_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError) as err:
        CIFAR10DataModule(path=str(tmp_path), cache_dir=str(tmp_path / "c"), **kwargs)
    assert str(err.value).startswith(message)


def test_num_classes_follows_the_data(tmp_path: Path) -> None:
    """A class-folder tree of 3 classes trains without data.num_classes=3; a value that disagrees is refused."""
    from conftest import hydra_task

    from alexnet_lab.train import build

    tree = write_tree(tmp_path / "three", n_train=60, n_test=15, classes=3)
    overrides = ["model=cudaconvnet_18pct", f"data.path={tree}", f"data.cache_dir={tmp_path / 'c'}", "data.val_size=6"]
    with hydra_task("train", overrides, tmp_path / "run") as cfg:
        data, module, _ = build(cfg)
        assert data.num_classes == 3 and module.net.classifier.fc10.out_features == 3
        assert (
            cfg.data.num_classes is None
        )  # the composed config is left as composed: the count is passed, not written back
        assert module.hparams.run_config["data"]["num_classes"] == 3  # recorded in checkpoints as counted
    with pytest.raises(DataError, match="data has 3 classes, data.num_classes is 10; fix one"):
        datamodule(tree, tmp_path / "c2", num_classes=10)
