"""CIFAR-10 as uint8 tensors: found in any of its usual forms, decoded once into a cache, served from the device."""

from __future__ import annotations

import io
import logging
import pickle
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image

from alexnet_lab.batches import Batch
from alexnet_lab.data.common import (
    IMAGE_SUFFIXES,
    UNREADABLE,
    ClassCount,
    DataError,
    bomb_guarded,
    check_protocols,
    check_std,
    fit_progress,
    global_batch,
    source_key,
)
from alexnet_lab.data.loader import TensorBatches
from alexnet_lab.data.transforms import Normalize, center_crop
from alexnet_lab.files import atomic_write
from alexnet_lab.protocols import PROTOCOLS

log = logging.getLogger(__name__)

BATCHES_DIR = "cifar-10-batches-py"
BATCH_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
CACHE_VERSION = 1


Split = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, 3, 32, 32), int64 labels (N,)


# ----------------------------------------------------------------------------------------------- readers


class _BatchUnpickler(pickle.Unpickler):
    """Builds only what the official batch files hold: dicts, lists, bytes, str, numbers, and NumPy arrays of a
    numeric dtype. Any other global (the way a crafted pickle runs code) is refused before it is looked up."""

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def _unpickle(data: bytes, name: str) -> dict:
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        if str(err).startswith("refused global"):
            raise DataError(f"{name} is not a CIFAR-10 batch file ({err}); it was not loaded") from err
        raise DataError(f"corrupt CIFAR-10 batch file {name} ({err}); re-download or re-extract it") from err
    except Exception as err:  # any other unpickling failure means a corrupt file
        raise DataError(
            f"corrupt CIFAR-10 batch file {name} ({type(err).__name__}); re-download or re-extract it"
        ) from err
    if not isinstance(batch, dict):
        raise DataError(f"{name} is not a CIFAR-10 batch file (a {type(batch).__name__}, not a dict)")
    arrays = [v for v in batch.values() if isinstance(v, np.ndarray)]
    if any(a.dtype.kind not in "biuf" for a in arrays):
        raise DataError(f"{name} is not a CIFAR-10 batch file (an array of a non-numeric dtype)")
    return batch


def _decode_batches(files: dict[str, bytes], where: str) -> dict:
    """Official python-format batches (name -> raw bytes) into train/test splits."""
    missing = [f for f in BATCH_FILES if f not in files]
    if missing:
        raise DataError(f"{where} lacks {', '.join(missing)}; re-extract cifar-10-python.tar.gz there")
    splits: dict[str, list[Split]] = {"train": [], "test": []}
    for name in BATCH_FILES[:-1]:
        batch = _unpickle(files[name], f"{where}/{name}")
        data, labels = batch.get(b"data"), batch.get(b"labels")
        # the official shapes, checked before anything is converted (a pickle can nest one list in itself many times)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
            raise DataError(f"corrupt CIFAR-10 batch file {where}/{name} (its data is not a uint8 array of N x 3072 "
                            "pixels); re-extract it")  # fmt: skip
        if not (isinstance(labels, list) and len(labels) == len(data) and all(type(v) is int for v in labels)):
            raise DataError(f"corrupt CIFAR-10 batch file {where}/{name} (its labels are not {len(data)} integers); "
                            "re-extract it")  # fmt: skip
        images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
        labels = torch.tensor(labels, dtype=torch.int64)
        if len(images) != len(labels):
            raise DataError(f"corrupt CIFAR-10 batch file {where}/{name}: {len(images)} images, {len(labels)} labels")
        splits["test" if name == "test_batch" else "train"].append((images, labels))
    meta = _unpickle(files["batches.meta"], f"{where}/batches.meta")
    classes = [c.decode() for c in meta.get(b"label_names", [])]
    if not classes:
        raise DataError(
            f"corrupt CIFAR-10 batch file {where}/batches.meta: it names no classes (label_names); re-extract it"
        )
    return _assemble(splits, classes)


def _decode_image(data: bytes, name: str) -> torch.Tensor:
    try:
        with bomb_guarded(), Image.open(io.BytesIO(data)) as img:
            if img.size != (32, 32):  # from the header, before any pixel is decoded
                raise DataError(f"image {name} is {img.width}x{img.height}, CIFAR-10 images are 32x32; fix the source")
            rgb = np.asarray(img.convert("RGB"))
    except UNREADABLE as err:
        raise DataError(f"cannot decode image {name} ({err}); delete or replace the file") from err
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def _decode_tree(entries: Iterable[tuple[str, str, str, bytes]], where: str) -> dict:
    """(split, class, name, bytes) entries of a train/<class>/* + test/<class>/* tree into splits."""
    by_split: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
    for split, cls, name, data in entries:
        by_split[split].setdefault(cls, []).append((name, data))
    classes = sorted(by_split["train"])
    if not classes:
        raise DataError(f"{where} has no train/<class>/ images; point data.path at a CIFAR-10 class-folder tree")
    if sorted(by_split["test"]) != classes:
        raise DataError(f"{where}: test/ classes {sorted(by_split['test'])} differ from train/ classes {classes}")
    splits: dict[str, list[Split]] = {"train": [], "test": []}
    for split, per_class in by_split.items():
        for label, cls in enumerate(classes):
            files = sorted(per_class[cls])
            images = torch.stack([_decode_image(data, f"{where}/{split}/{cls}/{name}") for name, data in files])
            splits[split].append((images, torch.full((len(files),), label, dtype=torch.int64)))
    return _assemble(splits, classes, mix=True)


def _assemble(splits: dict[str, list[Split]], classes: list[str], mix: bool = False) -> dict:
    """Concatenate the parts of each split; ``mix`` puts class-sorted trees into a fixed random order, as the
    official batches are, so that a limited number of batches still covers every class."""
    out: dict = {"classes": classes, "version": CACHE_VERSION}
    for split, parts in splits.items():
        images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if mix:
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
            images, labels = images[order], labels[order]
        out[f"{split}_images"], out[f"{split}_labels"] = images.contiguous(), labels
    return out


def _tree_root(folder: Path) -> Path | None:
    """``folder`` or its single subfolder holding train/ and test/ class folders."""
    for cand in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    return None


def _read_tree_folder(root: Path) -> dict:
    def entries() -> Iterable[tuple[str, str, str, bytes]]:
        for split in ("train", "test"):
            for cls_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
                files = [f for f in sorted(cls_dir.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
                if not files:
                    raise DataError(
                        f"class folder {cls_dir} holds no PNG or JPEG images; add them or remove the folder"
                    )
                for f in files:
                    yield split, cls_dir.name, f.name, f.read_bytes()

    return _decode_tree(entries(), str(root))


_TREE_MEMBER = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+)$")
MAX_MEMBER_BYTES = 64 * 2**20  # an official batch file is 31 MB, an image a few KB: a larger member is not CIFAR-10
MAX_ARCHIVE_BYTES = 256 * 2**20  # all of CIFAR-10 unpacked is 178 MB (batches) or about 60 MB (a JPEG tree)


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, read: list[int]) -> bytes:
    """A member's bytes, refused before reading when its header claims more than any CIFAR-10 file holds, or when the
    archive's members together would exceed all of CIFAR-10 (a small .tar.gz can inflate to gigabytes); ``read``
    counts the bytes taken so far."""
    if member.size > MAX_MEMBER_BYTES:
        raise DataError(f"archive {path}: member {member.name} claims {member.size:,} bytes, more than any CIFAR-10 "
                        f"file ({MAX_MEMBER_BYTES // 2**20} MB); it was not read: use the official archive")  # fmt: skip
    read[0] += member.size
    if read[0] > MAX_ARCHIVE_BYTES:
        raise DataError(f"archive {path} holds more than {MAX_ARCHIVE_BYTES // 2**20} MB of files, more than all of "
                        "CIFAR-10; it was not read further: use the official archive")  # fmt: skip
    return tar.extractfile(member).read(MAX_MEMBER_BYTES + 1)


def _read_archive(path: Path) -> dict:
    """A .tar.gz of the official batches or of a class-folder tree, read straight into tensors (not unpacked)."""
    batches: dict[str, bytes] = {}
    tree: list[tuple[str, str, str, bytes]] = []
    read = [0]  # bytes of the members read so far
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = member.name.split("/")
                if len(parts) >= 2 and parts[-2] == BATCHES_DIR and parts[-1] in BATCH_FILES:
                    batches[parts[-1]] = _member_bytes(tar, member, path, read)
                elif (m := _TREE_MEMBER.search(member.name)) and Path(m[3]).suffix.lower() in IMAGE_SUFFIXES:
                    tree.append((m[1], m[2], m[3], _member_bytes(tar, member, path, read)))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"corrupt or truncated archive {path} ({err}); download it again") from err
    if batches:
        return _decode_batches(batches, f"{path}:{BATCHES_DIR}")
    if tree:
        return _decode_tree(tree, str(path))
    raise DataError(f"archive {path} holds neither {BATCHES_DIR}/ nor train/<class>/ + test/<class>/ images")


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar"))


def find_source(path: Path) -> tuple[str, Path]:
    """The first usable source at ``path``: batches folder, class-folder tree, then archive."""
    if _is_archive(path):
        return "archive", path
    if path.is_dir():
        for cand in (path, path / BATCHES_DIR):
            if cand.is_dir() and (cand.name == BATCHES_DIR or (cand / "batches.meta").exists()):
                return "batches", cand
        if (root := _tree_root(path)) is not None:
            return "tree", root
        archives = sorted(p for p in path.iterdir() if _is_archive(p))
        if archives:
            return "archive", archives[0]
    raise FileNotFoundError(path)


def read_source(kind: str, path: Path) -> dict:
    if kind == "batches":
        return _decode_batches({f: (path / f).read_bytes() for f in BATCH_FILES if (path / f).is_file()}, str(path))
    if kind == "tree":
        return _read_tree_folder(path)
    return _read_archive(path)


def _cache_file(cache_dir: Path, source: Path) -> Path:
    stat = source.stat()
    return cache_dir / f"cifar10-uint8-{source_key(source.resolve(), stat.st_size, stat.st_mtime_ns, CACHE_VERSION)}.pt"


# ------------------------------------------------------------------------------------------- datamodule


class CIFAR10DataModule(ClassCount, L.LightningDataModule):
    """CIFAR-10 from an official batches folder, a class-folder image tree, a .tar.gz of either, or a download.

    The first read decodes everything into a uint8 tensor cache in ``cache_dir``; later runs load it in about
    a second. The whole dataset then sits on the training device and batches are index slices of it
    (see :class:`TensorBatches`); crop and flip run on whole batches there.

    Input units follow each network's origin: ``mean``/``std`` standardise per channel (torchvision style), or
    ``mean="pixel"`` subtracts the mean image of the training split and ``std=1/255`` keeps 0-255 pixel units,
    as cuda-convnet fed its CIFAR-10 nets. ``crop_size`` < 32 trains on random crops of that size (cuda-convnet's
    24x24) and evaluates the centre crop or ten crops (``val_protocol`` / ``test_protocol``).
    """

    test_split = "test"  # the split Lightning's test stage evaluates

    def __init__(
        self,
        path: str,
        cache_dir: str,
        download: bool = False,
        num_classes: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        val_size: int = 5000,
        seed: int = 0,
        split_seed: int = 0,
        crop_padding: int = 4,
        crop_size: int | None = None,
        train_crop: str = "random",
        hflip: bool = True,
        mean: str | list[float] | None = None,
        std: float | list[float] | None = None,
        val_protocol: str = "center",
        test_protocol: str = "center",
    ) -> None:
        super().__init__()
        self.path, self.cache_dir, self.download = Path(path).expanduser(), Path(cache_dir).expanduser(), download
        self._num_classes = num_classes
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.val_size, self.seed, self.split_seed = val_size, seed, split_seed
        if crop_size is not None and not 0 < crop_size <= 32:
            raise DataError(f"data.crop_size={crop_size} must be in [1, 32] (or null: 32)")
        if train_crop not in ("random", "center"):
            raise DataError(f"data.train_crop={train_crop!r}: use random or center")
        self.crop_padding, self.crop_size, self.train_crop, self.hflip = (
            crop_padding,
            crop_size or 32,
            train_crop,
            hflip,
        )
        if isinstance(mean, str) and mean not in ("pixel", "channel"):
            raise DataError(f"data.mean={mean!r}: use pixel, channel, three values or null")
        if (mean is None) != (std is None):
            raise DataError("data.mean and data.std go together: set both, or both to null (x / 255 only)")
        check_std(std)
        self.mean, self.std = mean, std
        self.protocols = check_protocols(val_protocol, test_protocol)
        self.normalize = Normalize()
        self.classes: list[str] = []
        self.splits: dict[str, Split] = {}

    # -- finding and caching

    def _source(self) -> tuple[str, Path]:
        try:
            return find_source(self.path)
        except FileNotFoundError:
            pass
        if self.download:
            from torchvision.datasets import CIFAR10

            try:
                CIFAR10(str(self.cache_dir), train=True, download=True)
            except Exception as err:  # network errors come in many types
                raise DataError(
                    f"CIFAR-10 download to {self.cache_dir} failed ({err}); set data.path to a local copy"
                ) from err
            return "batches", self.cache_dir / BATCHES_DIR
        raise DataError(
            f"no CIFAR-10 data at {self.path}: expected {BATCHES_DIR}/, train/<class>/ + test/<class>/ image folders, "
            "or a .tar.gz of either; set data.path (once per machine: conf/local/default.yaml, or ALEXNET_CIFAR10) "
            "to one, or data.download=true"
        )

    def cache_path(self) -> Path:
        _, source = self._source()
        return _cache_file(self.cache_dir, source)

    def prepare_data(self) -> None:
        kind, source = self._source()
        cache = _cache_file(self.cache_dir, source)
        if cache.exists():
            return
        log.info("decoding CIFAR-10 (%s) from %s into %s", kind, source, cache)
        data = read_source(kind, source)
        data["source"] = str(source)
        atomic_write(cache, lambda f: torch.save(data, f))

    def count_classes(self) -> int:
        """The number of classes the data holds (decoding it into the cache first, once)."""
        return len(self._load_cache()["classes"])

    def _load_cache(self) -> dict:
        cache = self.cache_path()
        if not cache.exists():
            self.prepare_data()
        try:
            return torch.load(cache, mmap=True, weights_only=True)
        except Exception as err:
            raise DataError(f"unreadable CIFAR-10 cache {cache} ({err}); delete it to rebuild it") from err

    # -- splits

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        data = self._load_cache()
        self.classes = list(data["classes"])
        if self._num_classes is not None and len(self.classes) != self._num_classes:
            raise DataError(
                f"data has {len(self.classes)} classes, data.num_classes is {self._num_classes}; fix one, or set "
                "data.num_classes=null to follow the data"
            )
        self._num_classes = len(self.classes)
        train_x, train_y = data["train_images"], data["train_labels"]
        n = len(train_y)
        if not 0 <= self.val_size < n:
            raise DataError(f"data.val_size={self.val_size} must be in [0, {n}); 0 validates on the test split")
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        # the validation split is fixed by split_seed alone, so runs with different seeds share it
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :].sort().values
        test = (data["test_images"].to(device), data["test_labels"].to(device))
        self.splits = {
            "train": (train_x[train_idx].to(device), train_y[train_idx].to(device)),
            "val": (train_x[val_idx].to(device), train_y[val_idx].to(device)) if self.val_size else test,
            "test": test,
        }
        self.normalize = self._normalize(self.splits["train"][0])

    def _normalize(self, train_images: torch.Tensor) -> Normalize:
        """The configured input units; "pixel" and "channel" means are measured on the training split."""
        if not isinstance(self.mean, str):
            return Normalize(self.mean, self.std)
        pixel_mean = (train_images.sum(dim=0, dtype=torch.float64) / (255.0 * len(train_images))).float().cpu()
        return Normalize(pixel_mean if self.mean == "pixel" else pixel_mean.mean(dim=(1, 2)), self.std)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the network receives."""
        return 3, self.crop_size, self.crop_size

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the data: splits and classes (also where only prepare_data ran)."""
        if not self.classes:
            self.classes = list(self._load_cache()["classes"])
        val = f"{self.val_size} images held out of train" if self.val_size else "test split (data.val_size=0)"
        views = {split: f", {PROTOCOLS[p]} {self.crop_size}x{self.crop_size}" if self.crop_size < 32 else ""
                 for split, p in self.protocols.items()}  # fmt: skip
        tested = len(self.splits["test"][1]) if self.splits else len(self._load_cache()["test_labels"])
        return {
            "val_split": val + views["val"],
            "test_split": "test split" + views["test"],
            "test_images": int(tested),
            "classes": [[c, c] for c in self.classes],
        }

    def _loader(self, split: str, train: bool) -> TensorBatches:
        images, labels = self.splits[split]
        trainer = self.trainer
        batch_size, world_size, rank = global_batch(trainer, self.batch_size, self.eval_batch_size, train)
        overfit = trainer is not None and bool(trainer.overfit_batches)  # fixed batches, seen as they are
        views = (
            "random"
            if train and not overfit
            else (self.protocols.get(split, "center") if self.crop_size < 32 else "full")
        )
        return TensorBatches(
            images,
            labels,
            batch_size,
            self.normalize,
            shuffle=train and not overfit,
            drop_last=train,
            crop_padding=self.crop_padding,
            crop_size=self.crop_size,
            random_crop=self.train_crop == "random",
            hflip=self.hflip,
            views=views,
            seed=self.seed,
            epoch_fn=lambda: fit_progress(self.trainer)[0],
            trained_fn=lambda: fit_progress(self.trainer)[1],
            rank=rank,
            world_size=world_size,
        )

    def unaugmented_batches(
        self, split: str, device: torch.device, indices: torch.Tensor | None = None
    ) -> Iterator[Batch]:
        """(normalised centre views, labels) of a split (or of its images at ``indices``), in order, unaugmented:
        what a trained network is shown for prediction."""
        images, labels = self.splits[split]
        if indices is not None:
            images, labels = images[indices.to(images.device)], labels[indices.to(labels.device)]
        views = "center" if self.crop_size < 32 else "full"
        loader = TensorBatches(
            images, labels, self.eval_batch_size, self.normalize, views=views, crop_size=self.crop_size
        )
        for x, y in loader:
            yield Batch(x.to(device), y.to(device))

    def images(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) of a split's images at ``indices``, as the network sees them (its centre crop)."""
        return center_crop(self.splits[split][0][indices.to(self.splits[split][0].device)], self.crop_size).cpu()

    def labels(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        return self.splits[split][1][indices.to(self.splits[split][1].device)].cpu()

    def split_size(self, split: str) -> int:
        return len(self.splits[split][1])

    def class_names(self) -> list[str]:
        return list(self.classes)

    def train_dataloader(self) -> TensorBatches:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._loader("val", train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test", train=False)
