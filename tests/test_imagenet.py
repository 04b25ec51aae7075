"""ImageNet DataModule: folder trees with ImageNet's odd files, the official archives, subsets, the paper's
preprocessing (crop geometry, PCA lighting, 10-crop evaluation) and unreadable images."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import isolated_env, run_cli, write_jpeg_tree
from PIL import Image
from torch import nn
from torchvision.datasets import imagenet as tv_imagenet
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2.functional import center_crop as tv_center_crop
from torchvision.transforms.v2.functional import pil_to_tensor

from alexnet_lab.batches import Views
from alexnet_lab.data import DataError, ImageNetDataModule
from alexnet_lab.data.common import global_batch
from alexnet_lab.data.imagenet.gpu import decode_files
from alexnet_lab.data.imagenet.workers import Draws, Encoded, ImageFiles, WorkerBatch, collate
from alexnet_lab.data.transforms import center_crop, pca_lighting, ten_crop, windows
from alexnet_lab.module import Classifier

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331"]
EIGVAL = [0.2175, 0.0188, 0.0045]
EIGVEC = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
SMALL = {
    "stored_size": 40, "resize_size": 40, "crop_size": 32, "num_workers": 0, "mean_images": 50, "pca_eigval": EIGVAL, "pca_eigvec": EIGVEC,
    "minival_per_class": 0,
}  # fmt: skip


def datamodule(root: Path, tmp_path: Path, **kwargs) -> ImageNetDataModule:
    settings = {**SMALL, "num_classes": 3, "batch_size": 4, "eval_batch_size": 4, **kwargs}
    return ImageNetDataModule(str(root), str(tmp_path / "cache"), **settings)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_jpeg_tree(tmp_path / "imagenet", WNIDS[:3], train=5, val=2)


def first_batch(loader, epoch: int = 0):
    loader.sampler.set_epoch(epoch)
    return next(iter(loader))


def epoch_batches(loader, epoch: int) -> list:
    loader.sampler.set_epoch(epoch)
    return list(loader)


# ------------------------------------------------------------------------------------ folder tree


def test_tree_with_odd_files_is_rescaled_once_and_served_with_true_labels(tree: Path, tmp_path: Path) -> None:
    dm = datamodule(tree, tmp_path, mean="channel")
    dm.prepare_data()
    dm.setup()
    prepared = sorted(p for p in dm.prepared_root.rglob("*.JPEG"))
    assert len(prepared) == 3 * 5 + 3 * 2
    for path in prepared:  # grayscale, CMYK and the PNG named .JPEG all became RGB JPEGs, shorter side 40
        with Image.open(path) as img:
            assert (img.format, img.mode, min(img.size)) == ("JPEG", "RGB", 40), path
    assert dm.classes == WNIDS[:3] and len(dm.samples["train"]) == 15 and len(dm.samples["val"]) == 6
    for path, label in dm.samples["train"] + dm.samples["val"]:
        assert Path(path).parent.name == WNIDS[label] and str(dm.prepared_root) in path

    images, labels, draws, skipped, _ = first_batch(dm.train_dataloader())
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 40, 40) and skipped == []
    assert draws.crop.shape == (4, 2) and draws.flip.shape == (4,) and draws.box.shape == (4, 4)
    assert labels.dtype == torch.int64
    x = dm.train_views(images, draws)
    assert x.dtype == torch.float32 and x.shape == (4, 3, 32, 32)
    val_images = first_batch(dm.val_dataloader())[0]
    assert dm.eval_views(val_images, "center").shape == (4, 3, 32, 32)
    ten = dm.eval_views(val_images, "ten_crop")
    assert isinstance(ten, Views) and ten.images.shape == (4, 10, 3, 32, 32)
    # class colour survives decoding: the mean brightness rises with the label (30 + 40 * label)
    means = [val_images[i].float().mean().item() for i in range(4)]
    val_labels = first_batch(dm.val_dataloader())[1].tolist()
    assert all(abs(m - (30 + 40 * y)) < 15 for m, y in zip(means, val_labels, strict=True))


def test_describe_before_setup_reports_the_data_and_changes_nothing(tree: Path, tmp_path: Path) -> None:
    # the main process of a spawned DDP run only prepares data, describes it, and pickles the module to the ranks
    dm = datamodule(tree, tmp_path, mean="channel")
    dm.prepare_data()
    described = dm.describe()
    assert described["train_images"] == 15
    assert described["val_split"] == "the val split val/ (6 images), centre crop"
    assert [c for c, _ in described["classes"]] == WNIDS[:3] and dm.samples == {} and dm.normalize is None
    dm.setup()
    assert dm.normalize is not None and len(dm.samples["train"]) == 15


def test_mean_image_is_the_training_average_and_per_channel_its_average(tree: Path, tmp_path: Path) -> None:
    dm = datamodule(tree, tmp_path, mean="pixel")
    dm.prepare_data()
    dm.setup()
    files = ImageFiles(dm.samples["train"], 40, 32)
    by_hand = torch.stack([files[(i, 0)].image for i in range(len(files))]).double().mean(0) / 255
    assert dm.normalize.mean.shape == (3, 40, 40)
    torch.testing.assert_close(dm.normalize.mean.double(), by_hand, atol=1e-6, rtol=0)
    per_channel = datamodule(tree, tmp_path, mean="channel")
    per_channel.setup()
    torch.testing.assert_close(
        per_channel.normalize.mean.flatten().double(), by_hand.mean(dim=(1, 2)), atol=1e-6, rtol=0
    )


# --------------------------------------------------------------------------------------- subsets


def test_minival_is_held_out_of_train_and_apart_from_val(tmp_path: Path) -> None:
    """Selection without peeking: the minival (the last n training images of each class) validates, is never
    trained on, and shares nothing with the val split, which only the test stage evaluates."""
    root = write_jpeg_tree(tmp_path / "six", WNIDS[:3], train=6, val=2)
    dm = datamodule(root, tmp_path, minival_per_class=2, max_per_class=3, prepare=False, mean=[0.5] * 3)
    dm.setup()
    train, minival = ({Path(p).name for p, _ in dm.samples[s]} for s in ("train", "minival"))
    assert minival == {f"{w}_{i}.JPEG" for w in WNIDS[:3] for i in (4, 5)}  # the last two of each class
    assert train == {f"{w}_{i}.JPEG" for w in WNIDS[:3] for i in (0, 1, 2)}  # max_per_class from the rest
    paths = {s: {p for p, _ in dm.samples[s]} for s in ("train", "minival", "val")}
    assert not paths["train"] & paths["minival"] and not (paths["train"] | paths["minival"]) & paths["val"]
    assert all("/train/" in p for p, _ in dm.samples["minival"]) and all("/val/" in p for p, _ in dm.samples["val"])
    assert len(dm.val_dataloader().dataset.samples) == 6 and len(dm.test_dataloader().dataset.samples) == 6
    assert dm.val_dataloader().dataset.samples == dm.samples["minival"]
    assert dm.test_dataloader().dataset.samples == dm.samples["val"]
    with pytest.raises(DataError, match="holds 6 images, not more than the 6 held out for the minival"):
        datamodule(root, tmp_path, minival_per_class=6, prepare=False, mean=[0.5] * 3).setup()


def test_class_and_size_subsets_pick_exactly_the_requested_classes_and_counts(tmp_path: Path) -> None:
    root = write_jpeg_tree(tmp_path / "six", WNIDS, train=5, val=3)
    spread = datamodule(root, tmp_path, classes=3, max_per_class=2, max_val_per_class=1, prepare=False, mean=[0.5] * 3)
    spread.setup()
    assert spread.classes == [WNIDS[0], WNIDS[2], WNIDS[4]]  # spread over the sorted wnids
    train = spread.samples["train"]
    assert [Path(p).name for p, _ in train] == [f"{w}_{i}.JPEG" for w in spread.classes for i in (0, 1)]
    assert [y for _, y in train] == [0, 0, 1, 1, 2, 2]
    assert [Path(p).name for p, _ in spread.samples["val"]] == [f"{w}_0.JPEG" for w in spread.classes]

    listed = datamodule(root, tmp_path, classes=[WNIDS[5], WNIDS[1]], num_classes=2, prepare=False, mean=[0.5] * 3)
    listed.setup()
    assert listed.classes == [WNIDS[5], WNIDS[1]]
    assert len(listed.samples["train"]) == 10 and {y for _, y in listed.samples["train"]} == {0, 1}
    assert all(Path(p).parent.name == WNIDS[5] for p, y in listed.samples["train"] if y == 0)

    with pytest.raises(DataError, match="6 classes selected, data.num_classes is 1000; set data.classes"):
        datamodule(root, tmp_path, num_classes=1000, prepare=False, mean=[0.5] * 3).setup()
    with pytest.raises(DataError, match="data.classes names n99999999 not among the 6 class folders"):
        datamodule(root, tmp_path, classes=["n99999999"], num_classes=1, prepare=False, mean=[0.5] * 3).setup()
    with pytest.raises(DataError, match=r"data.classes=7 must be between 1 and the 6 classes found"):
        datamodule(root, tmp_path, classes=7, num_classes=7, prepare=False, mean=[0.5] * 3).setup()


def test_a_mid_epoch_resume_serves_the_rest_of_the_epoch_with_the_same_draws(tree: Path, tmp_path: Path) -> None:
    dm = datamodule(tree, tmp_path, mean=[0.5] * 3, prepare=False, batch_size=3)
    dm.setup()
    whole = epoch_batches(dm.train_dataloader(), epoch=1)
    assert len(whole) == 5  # 15 images, batches of 3
    resumed = dm.train_dataloader()
    resumed.progress = lambda: (1, 0)  # the restored trainer is at the start of epoch 1
    resumed.load_state_dict({"epoch": 1, "batches_trained": 2})
    rest = epoch_batches(resumed, epoch=1)
    assert len(rest) == 3
    for (x, y, d, *_), (x2, y2, d2, *_) in zip(whole[2:], rest, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert all(torch.equal(a, b) for a, b in zip(d, d2, strict=True))
    assert len(epoch_batches(resumed, epoch=1)) == 5  # the skip applies to one pass only


def test_epoch_sampler_splits_each_global_batch_over_ranks_like_one_process() -> None:
    from alexnet_lab.data.loader import EpochSampler

    single = EpochSampler(50, 8, seed=3, shuffle=True, drop_last=True)
    single.set_epoch(2)
    ranks = [EpochSampler(50, 4, seed=3, shuffle=True, drop_last=True, rank=r, world_size=2) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(2)
    whole, parts = list(single), [list(s) for s in ranks]
    assert len(whole) == 48 and [len(p) for p in parts] == [24, 24] == [len(s) for s in ranks]
    for b in range(6):  # global batch b: rank 0 takes its first half, rank 1 the second
        assert whole[8 * b : 8 * b + 4] == parts[0][4 * b : 4 * b + 4]
        assert whole[8 * b + 4 : 8 * b + 8] == parts[1][4 * b : 4 * b + 4]
    assert all(epoch == 2 for _, epoch in whole) and len({i for i, _ in whole}) == 48
    single.set_epoch(3)
    assert [i for i, _ in single] != [i for i, _ in whole]  # a new permutation every epoch


# ------------------------------------------------------------------------- official archives


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 36), (value, value, value)).save(buf, format="JPEG")
    return buf.getvalue()


def _fake_ilsvrc(root: Path) -> None:
    """Tiny official archives: a devkit (meta.mat with two leaf synsets and a parent, val ground truth), a train
    tar of per-class tars, a val tar of flat files."""
    from scipy.io import savemat

    root.mkdir(parents=True)
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "wordnet_height", "num_train_images"]
    rows = [
        (1, WNIDS[0], "tench, Tinca tinca", "a fish", 0, 0, 3),
        (2, WNIDS[1], "goldfish, Carassius auratus", "a fish", 0, 0, 3),
        (3, "n00000001", "fish", "a parent synset", 2, 1, 0),
    ]
    synsets = np.array(rows, dtype=[(f, object) for f in fields])
    mat = io.BytesIO()
    savemat(mat, {"synsets": synsets})
    truth = b"2\n1\n2\n1\n"  # ILSVRC2012_IDs of val images 1..4
    devkit = {
        "ILSVRC2012_devkit_t12/data/meta.mat": mat.getvalue(),
        "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": truth,
    }
    _tar(root / "ILSVRC2012_devkit_t12.tar.gz", devkit)
    class_tars = {}
    for c, wnid in enumerate(WNIDS[:2]):
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w") as tar:
            for i in range(3):
                data = _jpeg(40 + 150 * c)
                info = tarfile.TarInfo(f"{wnid}_{i}.JPEG")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        class_tars[f"{wnid}.tar"] = inner.getvalue()
    _tar(root / "ILSVRC2012_img_train.tar", class_tars)
    _tar(
        root / "ILSVRC2012_img_val.tar",
        {f"ILSVRC2012_val_{i:08d}.JPEG": _jpeg(40 + 150 * (i % 2)) for i in range(1, 5)},
    )


def test_official_archives_are_unpacked_with_torchvision_and_named_from_the_devkit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ilsvrc"
    _fake_ilsvrc(root)
    with pytest.raises(DataError, match="could not be verified|is not present .* or is corrupted .*checksum"):
        datamodule(root, tmp_path, num_classes=2, mean=[0.5] * 3).prepare_data()  # real checksums: a fake fails
    for key, (name, _) in tv_imagenet.ARCHIVE_META.items():  # accept the fakes' checksums instead
        monkeypatch.setitem(tv_imagenet.ARCHIVE_META, key, (name, hashlib.md5((root / name).read_bytes()).hexdigest()))
    before = sorted(p.name for p in root.iterdir())
    dm = datamodule(root, tmp_path, num_classes=2, mean=[0.5] * 3)
    dm.prepare_data()
    dm.setup()
    assert sorted(p.name for p in root.iterdir()) == before  # the data root is only read
    unpacked = dm.unpacked_root
    assert unpacked.parent == tmp_path / "cache" and (unpacked / "meta.bin").is_file()
    assert sorted(p.name for p in unpacked.iterdir() if p.is_dir()) == ["train", "val"]  # no .partial left behind
    assert dm.classes == WNIDS[:2]
    assert [(Path(p).name, y) for p, y in dm.samples["val"]] == [
        ("ILSVRC2012_val_00000002.JPEG", 0), ("ILSVRC2012_val_00000004.JPEG", 0),
        ("ILSVRC2012_val_00000001.JPEG", 1), ("ILSVRC2012_val_00000003.JPEG", 1),
    ]  # fmt: skip
    assert len(dm.samples["train"]) == 6
    names = dict(dm.describe()["classes"])
    assert names == {WNIDS[0]: "tench, Tinca tinca", WNIDS[1]: "goldfish, Carassius auratus"}
    # val image 1 has ground truth class 2 (goldfish, bright); its pixels say so
    bright = [first_batch(dm.val_dataloader())[0][i].float().mean().item() > 120 for i in range(4)]
    assert bright == [False, False, True, True]


def test_missing_archives_are_listed(tmp_path: Path) -> None:
    root = tmp_path / "half"
    root.mkdir()
    _tar(root / "ILSVRC2012_img_train.tar", {})
    with pytest.raises(DataError) as err:
        datamodule(root, tmp_path, mean=[0.5] * 3).prepare_data()
    message = str(err.value)
    assert "missing ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz" in message
    assert "train/<wnid>/ + val/<wnid>/ not found" in message and "set data.path (or ALEXNET_IMAGENET)" in message


# ------------------------------------------------------------------- preprocessing on the device


def test_crops_and_flips_cut_the_drawn_windows_of_known_pixels(tree: Path, tmp_path: Path) -> None:
    x = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).view(2, 3, 8, 10)
    got = windows(x, torch.tensor([[0, 0], [3, 5]]), 5, 4)
    assert torch.equal(got[0], x[0, :, 0:5, 0:4]) and torch.equal(got[1], x[1, :, 3:8, 5:9])
    for size in (4, 5, 7):  # centre crops placed exactly as torchvision places them
        assert torch.equal(center_crop(x, size), tv_center_crop(x, [size, size]))

    dm = datamodule(tree, tmp_path, mean=[0.0] * 3, std=1.0, pca_std=0.0)
    dm.setup()
    images = torch.arange(40 * 40).remainder(251).to(torch.uint8).view(40, 40).expand(3, 3, 40, 40).clone()
    images[1] = images[1].flip(-1)
    draws = Draws.stack([Draws.none()] * 3)._replace(
        crop=torch.tensor([[0, 0], [8, 3], [5, 8]]),
        flip=torch.tensor([False, True, False]),  # mirror the second
    )
    out = dm.train_views(images, draws)
    expect = images.float() / 255
    assert torch.equal(out[0], expect[0, :, 0:32, 0:32])
    assert torch.equal(out[1], expect[1, :, 8:40, 3:35].flip(-1))
    assert torch.equal(out[2], expect[2, :, 5:37, 8:40])

    # the worker's draws: offsets within the 40 - 32 room, flips about half, repeatable per (index, epoch)
    files = ImageFiles(dm.samples["train"], 40, 32, train=True, seed=3)
    drawn = Draws.stack([files[(i, e)].draws for i in range(15) for e in range(8)])
    assert drawn.crop.min() >= 0 and drawn.crop.max() <= 8 and 0.25 < drawn.flip.float().mean() < 0.75
    assert torch.equal(
        files[(4, 2)].draws.crop, ImageFiles(dm.samples["train"], 40, 32, train=True, seed=3)[(4, 2)].draws.crop
    )
    assert not torch.equal(files[(4, 2)].draws.crop, files[(4, 3)].draws.crop)


def test_pca_lighting_has_the_configured_statistics(tmp_path: Path) -> None:
    root = write_jpeg_tree(tmp_path / "one", WNIDS[:1], train=1, val=1)
    files = ImageFiles([(str(next((root / "train").rglob("*.JPEG"))), 0)], 8, 8, train=True, pca_std=0.1, seed=0)
    alphas = torch.stack([files[(0, epoch)].draws.lighting for epoch in range(3000)])  # one draw per image per pass
    assert alphas.mean(0).abs().max() < 0.01
    torch.testing.assert_close(alphas.std(0), torch.full((3,), 0.1), atol=0.006, rtol=0)
    shifts = pca_lighting(alphas, torch.tensor(EIGVAL), torch.tensor(EIGVEC))
    assert shifts.shape == (3000, 3, 1, 1)
    rgb = shifts.flatten(1).double()
    expected = (
        torch.tensor(EIGVEC).double()
        @ torch.diag((0.1 * torch.tensor(EIGVAL).double()) ** 2)
        @ torch.tensor(EIGVEC).double().T
    )
    torch.testing.assert_close(torch.cov(rgb.T), expected, atol=2e-5, rtol=0.1)


def test_ten_crop_evaluation_averages_the_ten_views_softmax(tree: Path, tmp_path: Path) -> None:
    x = torch.arange(2 * 3 * 9 * 11, dtype=torch.float32).view(2, 3, 9, 11)
    views = ten_crop(x, 6)
    corners = [x[..., :6, :6], x[..., :6, 5:], x[..., 3:, :6], x[..., 3:, 5:], tv_center_crop(x, [6, 6])]
    mirrored = [x.flip(-1)[..., :6, :6], x.flip(-1)[..., :6, 5:], x.flip(-1)[..., 3:, :6], x.flip(-1)[..., 3:, 5:]]
    for i, view in enumerate([*corners, *mirrored, tv_center_crop(x.flip(-1), [6, 6])]):  # the five, then the mirror's
        assert torch.equal(views[:, i], view), i
    assert torch.equal(views[:, 5], corners[1].flip(-1))  # the mirror image's top-left is the top-right, mirrored

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    module = Classifier(net, None, num_classes=5, channels_last=False)
    batch = torch.randn(3, 10, 3, 12, 12)
    by_hand = torch.stack(
        [torch.stack([net(batch[n, v : v + 1])[0].softmax(-1) for v in range(10)]).mean(0) for n in range(3)]
    )
    torch.testing.assert_close(module.view_averaged_log_probs(Views(batch)).exp(), by_hand)
    target = torch.tensor([1, 4, 0])
    loss, _ = module._step("test", (Views(batch), target))
    torch.testing.assert_close(loss, F.nll_loss(by_hand.log(), target))
    top1 = 100 * (1 - module.test_metrics.compute()["test/top1"])
    assert top1 == pytest.approx(100 * (by_hand.argmax(-1) != target).float().mean().item())
    # a batch whose images were all unreadable (and skipped) is no step at all, not a NaN loss
    images, labels, *_ = collate(["a.JPEG", "b.JPEG"])
    assert module._step("train", (images, labels)) is None and module.train_metrics["loss"].update_count == 0


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))],
)
@pytest.mark.parametrize("train_crop", ["random", "random_resized"])
def test_encoded_files_decode_on_the_device_like_the_workers(
    tree: Path, tmp_path: Path, device: str, train_crop: str
) -> None:
    dm = datamodule(tree, tmp_path, mean="channel", train_crop=train_crop, batch_size=15)
    dm.prepare_data()
    dm.setup()
    workers = first_batch(dm.train_dataloader(), epoch=2)
    dm.decode = "cuda"
    encoded = first_batch(dm.train_dataloader(), epoch=2)
    assert isinstance(encoded.images, Encoded) and encoded.paths == workers.paths  # same files, same draws
    assert all(torch.equal(a, b) for a, b in zip(encoded.draws, workers.draws, strict=True))
    files = encoded.images.files()
    assert [len(f) for f in files] == [Path(p).stat().st_size for p in encoded.paths]
    decoded, keep = dm.decode_on_device(files, encoded.paths, encoded.draws, torch.device(device), train=True)
    assert all(keep) and decoded.device.type == device and decoded.shape == workers.images.shape
    assert (decoded.cpu().float() - workers.images.float()).abs().mean() < 2.0  # IDCT rounding only


def test_gpu_decoding_retries_file_by_file_and_hands_what_nvjpeg_rejects_to_pil(tree: Path) -> None:
    """The fallback logic of decode=cuda, on the CPU: a stand-in for nvjpeg that, as nvjpeg does, fails a whole batch
    when one file in it is not a JPEG it takes (here the PNG named .JPEG, and a truncated file)."""
    folder = tree / "train" / WNIDS[0]
    paths = [str(folder / f"{WNIDS[0]}_{i}.JPEG") for i in range(5)]  # 1 grayscale, 2 CMYK, 3 a PNG
    truncated = folder / "cut.JPEG"
    truncated.write_bytes(Path(paths[4]).read_bytes()[:200])
    files = [read_file(p) for p in paths]
    rejected = {3}  # the PNG
    calls = []

    def nvjpeg(data, mode, device):
        if isinstance(data, list):
            calls.append(len(data))
            if any(torch.equal(d, files[i]) for d in data for i in rejected) or any(len(d) == 200 for d in data):
                raise RuntimeError("nvjpeg: a batch with a file it cannot decode")
            return [decode_jpeg(d, mode=mode) for d in data]
        calls.append(1)
        if any(torch.equal(data, files[i]) for i in rejected) or len(data) == 200:
            raise RuntimeError("nvjpeg: not a baseline JPEG")
        return decode_jpeg(data, mode=mode)

    cpu = torch.device("cpu")
    clean = [0, 1, 2, 4]
    decoded = decode_files([files[i] for i in clean], [paths[i] for i in clean], cpu, skip_bad=False, decoder=nvjpeg)
    assert calls == [4] and all(
        torch.equal(d, decode_jpeg(files[i], mode=ImageReadMode.RGB)) for d, i in zip(decoded, clean)
    )

    calls.clear()
    decoded = decode_files(files, paths, cpu, skip_bad=False, decoder=nvjpeg)
    assert calls == [5, 1, 1, 1, 1, 1]  # the batch failed: file by file
    assert torch.equal(decoded[3], pil_to_tensor(Image.open(paths[3]).convert("RGB")))  # PIL took the PNG
    assert all(torch.equal(decoded[i], decode_jpeg(files[i], mode=ImageReadMode.RGB)) for i in clean)

    with_bad = [*files, read_file(str(truncated))], [*paths, str(truncated)]
    with pytest.raises(DataError, match="cannot decode image .*cut.JPEG"):
        decode_files(*with_bad, cpu, skip_bad=False, decoder=nvjpeg)
    kept = decode_files(*with_bad, cpu, skip_bad=True, decoder=nvjpeg)
    assert kept[-1] is None and all(d is not None for d in kept[:-1])


def test_an_interrupted_rescale_pass_writes_only_the_missing_copies(tree: Path, tmp_path: Path) -> None:
    dm = datamodule(tree, tmp_path, mean="channel")
    dm.prepare_data()
    copies = sorted(dm.prepared_root.rglob("*.JPEG"))
    # as a pass killed midway leaves it: no completion marker, a third of the copies not written yet
    dm._prepared_marker().unlink()
    for path in copies[::3]:
        path.unlink()
    kept = {path: path.stat().st_mtime_ns for path in copies if path.exists()}
    again = datamodule(tree, tmp_path, mean="channel")
    again.prepare_data()
    assert sorted(dm.prepared_root.rglob("*.JPEG")) == copies and again._prepared_marker().exists()
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # the copies already there were left alone


# ----------------------------------------------------------------------------- unreadable images


def _truncate(tree: Path) -> Path:
    victim = tree / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG"
    victim.write_bytes(victim.read_bytes()[:200])
    return victim


def test_unreadable_image_is_named_or_skipped_and_counted(tree: Path, tmp_path: Path) -> None:
    victim = _truncate(tree)
    with pytest.raises(DataError, match=f"cannot decode image .*{victim.name} .*data.skip_bad_images=true"):
        datamodule(tree, tmp_path, mean="channel").prepare_data()
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "cache").rglob("*"))  # nothing half-written

    dm = datamodule(tree, tmp_path, mean="channel", skip_bad_images=True)
    dm.prepare_data()
    dm.setup()
    assert len(dm.samples["train"]) == 14 and dm.describe()["skipped_images"] == [str(victim)]

    # read straight from the tree, the worker names it, or skips it and the batch says so
    direct = datamodule(tree, tmp_path, mean=[0.5] * 3, prepare=False, batch_size=15)
    direct.setup()
    with pytest.raises(DataError, match=f"cannot decode image .*{victim.name}"):
        first_batch(direct.train_dataloader())
    direct.skip_bad_images = True
    images, labels, draws, skipped, _ = first_batch(direct.train_dataloader())
    assert skipped == [str(victim)] and len(images) == len(labels) == len(draws.crop) == 14
    direct.on_after_batch_transfer(WorkerBatch(images, labels, draws, skipped, []), 0)
    assert direct.describe()["skipped_images"] == [str(victim)]


# -------------------------------------------------------------------------------------- the CLI

CLI = [
    "experiment=imagenet_torchvision",
    "model=cudaconvnet_18pct",  # a small network for 32x32 crops keeps the run to seconds
    "trainer=cpu",
    "data.classes=3",
    "data.stored_size=40",
    "data.resize_size=40",
    "data.crop_size=32",
    "data.batch_size=5",
    "data.eval_batch_size=3",
    "data.mean_images=20",
    "data.minival_per_class=1",
    "trainer.max_epochs=1",
    "trainer.enable_model_summary=false",
    "~callbacks.rich_progress_bar",
    "seed=0",
]


def test_cli_trains_and_tests_with_ten_crops_and_says_so(tree: Path, tmp_path: Path) -> None:
    run_cli("alexnet-train", *CLI, f"data.path={tree}", "data.num_workers=1", "data.test_protocol=ten_crop",
            env=isolated_env(tmp_path), cwd=tmp_path)  # fmt: skip
    (metrics,) = (tmp_path / "logs" / "train" / "runs").glob("*/metrics.json")
    record = json.loads(metrics.read_text())
    assert record["status"] == "finished" and record["steps"] == 2  # 15 images less a minival of 3, batches of 5
    assert record["data"]["val_split"] == (
        "minival: the last 1 images of each class of train/ (3 images, not trained on), centre crop"
    )
    assert record["data"]["test_split"].startswith("the val split val/ (6 images), 10-crop")
    assert record["data"]["test_split"].endswith("evaluated once at the end")
    assert [c for c, _ in record["data"]["classes"]] == WNIDS[:3]
    assert 0.0 <= record["final"]["test/top1_err"] <= 100.0 and record["final"]["test/loss"] > 0


def test_cli_names_an_unreadable_image_from_a_worker_in_one_line(tree: Path, tmp_path: Path) -> None:
    victim = _truncate(tree)
    proc = run_cli("alexnet-train", *CLI, f"data.path={tree}", "data.prepare=false", "data.mean=[0.5,0.5,0.5]",
                   "data.num_workers=1", env=isolated_env(tmp_path), cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot decode image {victim} (") and last.endswith("set data.skip_bad_images=true")


def test_bad_settings_fail_with_the_key_and_the_fix(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.mean=pixel needs data.train_crop=random"):
        datamodule(tree, tmp_path, mean="pixel", train_crop="random_resized")
    with pytest.raises(DataError, match="data.test_protocol='five': use one of center, ten_crop"):
        datamodule(tree, tmp_path, test_protocol="five")
    with pytest.raises(DataError, match=r"need data.crop_size \(48\) <= data.resize_size \(40\)"):
        datamodule(tree, tmp_path, crop_size=48)
    if not torch.cuda.is_available():
        with pytest.raises(DataError, match="data.decode=cuda needs a CUDA device"):
            datamodule(tree, tmp_path, decode="cuda").setup()
    assert collate(["a.JPEG"]).skipped == ["a.JPEG"]  # a batch of only unreadable images still reports them
    three_ranks = SimpleNamespace(world_size=3, global_rank=1)
    assert global_batch(three_ranks, 129, 64, train=True) == (129, 3, 1)
    with pytest.raises(
        DataError,
        match=r"data.eval_batch_size=64 \(the global batch\) does not split over 3 devices; use a multiple of 3",
    ):
        global_batch(three_ranks, 129, 64, train=False)


def test_debug_overfit_runs_on_imagenet(tree: Path, tmp_path: Path) -> None:
    """debug=overfit fits the same batches, unaugmented, with either dataset (it once set a CIFAR-only key); the model
    summary's example input passes through the DataModule's batch hooks (it once met them as a WorkerBatch)."""
    proc = run_cli("alexnet-train", *CLI, f"data.path={tree}", "data.num_workers=0", "debug=overfit", "trainer.max_epochs=2",
            "test=false", "trainer.enable_model_summary=true", env=isolated_env(tmp_path), cwd=tmp_path)  # fmt: skip
    assert "Total params" in proc.stdout + proc.stderr
    (metrics,) = (tmp_path / "logs" / "debug" / "runs").glob("*/metrics.json")
    record = json.loads(metrics.read_text())
    assert record["status"] == "finished" and record["steps"] == 2 * 2  # two fixed batches an epoch
