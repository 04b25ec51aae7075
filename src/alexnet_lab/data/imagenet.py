"""ImageNet (ILSVRC-2012) from a class-folder tree or the official archives, with the paper's preprocessing.

Worker processes only decode: each image becomes a fixed-size uint8 tensor (the paper's centre 256x256, or a
random-resized 224 crop) plus its augmentation draws. The batch crosses to the device as uint8 and everything
else runs batched there: mean subtraction (per pixel or per channel), PCA lighting, random crops and flips,
centre or 10-crop evaluation views.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2.functional import resize, resized_crop

from alexnet_lab.data.common import (
    PROTOCOLS,
    DataError,
    atomic_save,
    check_protocols,
    fit_progress,
    global_batch,
    source_key,
)
from alexnet_lab.data.loader import EpochSampler, derived_seed
from alexnet_lab.data.transforms import Normalize, center_crop, hflip, pca_lighting, ten_crop, windows
from alexnet_lab.files import atomic_write

log = logging.getLogger(__name__)

ARCHIVES = {
    "train": "ILSVRC2012_img_train.tar",
    "val": "ILSVRC2012_img_val.tar",
    "devkit": "ILSVRC2012_devkit_t12.tar.gz",
}
META_FILE = "meta.bin"  # what torchvision writes from the devkit: wnid -> class names, and the val labels
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
Sample = tuple[str, int]  # image path, label
DRAWS = 10  # per-image augmentation numbers, see ImageFiles


# ------------------------------------------------------------------------------------------ decoding


def unreadable(path: str, err: Exception) -> DataError:
    return DataError(f"cannot decode image {path} ({err}); delete or replace it, or set data.skip_bad_images=true")


def load_rgb(path: str, shorter_side: int | None = None) -> Image.Image:
    """An image file as RGB (grayscale, CMYK, palette and PNG-in-.JPEG included), optionally rescaled so its
    shorter side is ``shorter_side``. A truncated or unreadable file raises :class:`DataError` naming it."""
    try:
        with Image.open(path) as img:
            if shorter_side is not None:
                scale = shorter_side / min(img.size)
                # JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves enough pixels
                img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise unreadable(path, err) from err
    if shorter_side is not None and min(rgb.size) != shorter_side:
        scale = shorter_side / min(rgb.size)
        size = (max(shorter_side, round(rgb.width * scale)), max(shorter_side, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)  # antialiased, as torchvision's Resize on PIL images
    return rgb


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 (3, H, W)."""
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3).permute(2, 0, 1)


def resize_file(job: tuple[str, str, int]) -> tuple[str, str] | None:
    """Write ``src`` rescaled to shorter side ``size`` as a JPEG at ``dst``; None, or (src, why it failed)."""
    src, dst, size = job
    try:
        img = load_rgb(src, size)
    except DataError as err:
        return src, str(err)
    atomic_write(Path(dst), lambda f: img.save(f, format="JPEG", quality=90), sync=False)
    return None


class ImageFiles(Dataset):
    """One image per ``(index, epoch)`` key (see :class:`EpochSampler`) and its augmentation draws for that epoch.

    Returns ``(image, label, draws, path)``: ``image`` is uint8 (3, S, S) (the centre square after rescaling to
    shorter side S) or, in training with ``random_resized``, torchvision's RandomResizedCrop at ``crop_size``;
    with ``encoded`` it is the file's bytes instead, for decoding on the GPU. ``draws`` are [crop top, crop left,
    flip, 3 PCA alphas, random-resized box top, left, height, width], all from (seed, epoch, index): one draw per
    image per pass, whatever the worker and device counts. An unreadable image raises :class:`DataError` naming
    the file, or with ``skip_bad`` comes back as its path alone.
    """

    def __init__(
        self,
        samples: list[Sample],
        size: int,
        crop_size: int,
        train: bool = False,
        random_resized: bool = False,
        pca_std: float = 0.0,
        seed: int = 0,
        skip_bad: bool = False,
        encoded: bool = False,
    ) -> None:
        self.samples, self.size, self.crop_size = samples, size, crop_size
        self.train, self.random_resized, self.pca_std = train, random_resized, pca_std
        self.seed, self.skip_bad, self.encoded = seed, skip_bad, encoded

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int, torch.Tensor, str] | str:
        # (index, epoch) from EpochSampler; a plain index where Lightning swaps in its own sampler (overfit_batches)
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        path, label = self.samples[index]
        seed = derived_seed(self.seed, epoch, index)
        draws = torch.zeros(DRAWS)
        try:
            if self.train and self.random_resized:
                draws[6:] = torch.tensor(self._random_resized_box(path, seed), dtype=torch.float32)
            if self.encoded:
                image = read_file(path)
            elif self.train and self.random_resized:
                image = resized_crop(
                    to_tensor(load_rgb(path)), *draws[6:].int().tolist(), [self.crop_size] * 2, antialias=True
                )
            else:
                image = center_crop(to_tensor(load_rgb(path, self.size)), self.size)
        except DataError:
            if self.skip_bad:
                return path
            raise
        if self.train:
            gen = torch.Generator().manual_seed(seed)
            room = (self.crop_size if self.random_resized else self.size) - self.crop_size + 1
            draws[:2] = torch.randint(0, room, (2,), generator=gen)
            draws[2] = float(torch.rand(1, generator=gen).item() < 0.5)
            draws[3:6] = torch.randn(3, generator=gen) * self.pca_std
        return image, label, draws, path

    @staticmethod
    def _random_resized_box(path: str, seed: int) -> list[int]:
        """torchvision's RandomResizedCrop box (scale 0.08-1, ratio 3/4-4/3) for this image, seeded per image and
        epoch; only the file's header is read."""
        try:
            with Image.open(path) as img, torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                return list(RandomResizedCrop.get_params(img, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3]))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise unreadable(path, err) from err


class Encoded(NamedTuple):
    """A batch of encoded image files as one tensor (one shared-memory block per batch, not one per file)."""

    blob: torch.Tensor  # uint8, the files back to back
    sizes: torch.Tensor  # int64, each file's length

    def files(self) -> list[torch.Tensor]:
        return list(torch.split(self.blob, self.sizes.tolist()))


def collate(items: list[tuple[torch.Tensor, int, torch.Tensor, str] | str]) -> tuple[Any, ...]:
    """(images, labels, draws, skipped paths, paths): images stacked, or the files :class:`Encoded` for decoding on
    the GPU; the paths of skipped images travel along so the main process can count them."""
    kept = [item for item in items if not isinstance(item, str)]
    skipped = [item for item in items if isinstance(item, str)]
    if not kept:
        return (
            torch.empty(0, 3, 0, 0, dtype=torch.uint8),
            torch.empty(0, dtype=torch.int64),
            torch.empty(0, DRAWS),
            skipped,
            [],
        )
    images, labels, draws, paths = zip(*kept, strict=True)
    encoded = images[0].dim() == 1
    return (
        Encoded(torch.cat(images), torch.tensor([len(f) for f in images])) if encoded else torch.stack(images),
        torch.tensor(labels),
        torch.stack(draws),
        skipped,
        list(paths),
    )


class ResumableLoader(DataLoader):
    """A DataLoader Lightning saves in checkpoints: a mid-epoch resume skips the batches already trained."""

    def __init__(self, *args: Any, progress: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress  # () -> (epoch, batches trained in it)

    def state_dict(self) -> dict[str, int]:
        epoch, trained = self.progress()
        return {"epoch": epoch, "batches_trained": trained}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, _ = self.progress()
        self.sampler.skip_batches = state["batches_trained"] if state["epoch"] == epoch else 0


# -------------------------------------------------------------------------------------- finding data


def list_split(
    root: Path, classes: list[str], max_per_class: int | None, hold_out: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """(path, label) of each class folder's images sorted by name: the last ``hold_out`` of each class apart (a
    minival), and the first ``max_per_class`` of the others."""
    samples: list[Sample] = []
    held: list[Sample] = []
    for label, wnid in enumerate(classes):
        folder = root / wnid
        if not folder.is_dir():
            raise DataError(
                f"{root} has no folder {wnid}/ (a class of the training split); add it or pick data.classes"
            )
        files = sorted(e.name for e in os.scandir(folder) if Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
        if len(files) <= hold_out:
            raise DataError(
                f"class folder {folder} holds {len(files)} images, not more than the {hold_out} held out for the "
                "minival; add images or lower data.minival_per_class"
            )
        kept = files[: len(files) - hold_out]
        held += [(str(folder / name), label) for name in files[len(kept) :]]
        samples += [(str(folder / name), label) for name in kept[:max_per_class]]
    return samples, held


def pick_classes(available: list[str], classes: int | Sequence[str] | None) -> list[str]:
    """All classes, ``n`` of them spread evenly over the sorted wnids (so a subset spans the hierarchy), or a list."""
    if classes is None:
        return available
    if isinstance(classes, int) and not isinstance(classes, bool):
        if not 1 <= classes <= len(available):
            raise DataError(f"data.classes={classes} must be between 1 and the {len(available)} classes found")
        return [available[i * len(available) // classes] for i in range(classes)]
    wanted = [str(c) for c in classes]
    if missing := [c for c in wanted if c not in available]:
        raise DataError(f"data.classes names {', '.join(missing[:5])} not among the {len(available)} class folders")
    if len(set(wanted)) != len(wanted):
        raise DataError("data.classes lists a class twice; give each wnid once")
    return wanted


def unpack_archives(source: Path, target: Path, splits: Sequence[str]) -> None:
    """Turn the official ILSVRC2012 archives in ``source`` into ``target/<split>/<wnid>/`` (and ``target/meta.bin``
    from the devkit) with torchvision's parsers, checksums included. ``source`` is only read.

    torchvision's parsers read their archive from, and write into, one root: ``target`` gets links to the
    archives. Each split is unpacked into ``<split>.partial`` and renamed when complete, so an interrupted run
    never leaves a half tree that looks whole.
    """
    from torchvision.datasets import imagenet as tv

    need = [s for s in splits if not (target / s).is_dir()]
    if not need:
        return
    wanted = [ARCHIVES[s] for s in need if s in ARCHIVES]
    if "val" in need and not (target / META_FILE).exists():
        wanted.append(ARCHIVES["devkit"])  # the val labels live in the devkit
    missing = [a for a in wanted if not (source / a).is_file()]
    if missing or len(wanted) < len(need):
        folders = " + ".join(f"{s}/<wnid>/" for s in need)
        raise DataError(
            f"no ImageNet at {source}: {folders} not found, nor the archives to make them (missing "
            f"{', '.join(missing) or 'archives for ' + ', '.join(need)}); put them there or set data.path (or ALEXNET_IMAGENET)"
        )
    target.mkdir(parents=True, exist_ok=True)
    for archive in wanted:
        link = target / archive
        if not link.exists():
            link.symlink_to((source / archive).resolve())
    try:
        if ARCHIVES["devkit"] in wanted:
            tv.parse_devkit_archive(str(target))
        for split in need:
            partial = target / f"{split}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            log.info("unpacking %s into %s (once)", ARCHIVES[split], target / split)
            if split == "train":
                tv.parse_train_archive(str(target), folder=partial.name)
            else:
                tv.parse_val_archive(str(target), wnids=tv.load_meta_file(str(target))[1], folder=partial.name)
            os.replace(partial, target / split)
    except RuntimeError as err:  # torchvision's checksum check
        raise DataError(f"{err} ".split(". ")[0] + f" (checksum); download it again into {source}") from err


def write_class_names(source: Path, target: Path) -> None:
    """Parse the devkit lying in ``source`` (only read) into ``target/meta.bin`` once, when neither has one."""
    from torchvision.datasets import imagenet as tv

    if (source / META_FILE).exists() or (target / META_FILE).exists():
        return
    if not (source / ARCHIVES["devkit"]).is_file():
        return
    target.mkdir(parents=True, exist_ok=True)
    link = target / ARCHIVES["devkit"]
    if not link.exists():
        link.symlink_to((source / ARCHIVES["devkit"]).resolve())
    try:
        tv.parse_devkit_archive(str(target))
    except RuntimeError as err:
        log.warning("class names unavailable: %s", err)


def devkit_names(*folders: Path) -> dict[str, str]:
    """wnid -> human-readable name from the first of ``folders`` holding a devkit ``meta.bin`` (read only)."""
    from torchvision.datasets import imagenet as tv

    folder = next((f for f in folders if (f / META_FILE).exists()), None)
    if folder is None:
        return {}
    wnid_to_classes, _ = tv.load_meta_file(str(folder))
    return {wnid: ", ".join(names) for wnid, names in wnid_to_classes.items()}


# ------------------------------------------------------------------------------------------ datamodule


class ImageNetDataModule(L.LightningDataModule):
    """ILSVRC-2012 (or any ``train/<class>/`` + ``val/<class>/`` JPEG tree) with the paper's preprocessing.

    ``prepare_data`` unpacks official archives once, writes a copy rescaled to shorter side ``resize`` (so epochs
    never decode full-size JPEGs), and measures the training mean. ImageNet's test labels are not public, and
    the paper reports val numbers: validation during training runs on a minival (the last ``minival_per_class``
    training images of each class, never trained on), which picks the best checkpoint and drives the plateau
    schedule; the val split is evaluated once, at the end, by Lightning's test stage under ``test_protocol``.
    """

    test_split = "val"  # the split Lightning's test stage evaluates: ILSVRC-2012 val

    def __init__(
        self,
        path: str,
        cache_dir: str,
        num_classes: int | None = None,
        classes: int | list[str] | None = None,
        max_per_class: int | None = None,
        max_val_per_class: int | None = None,
        minival_per_class: int = 10,
        train_dir: str = "train",
        val_dir: str = "val",
        prepare: bool = True,
        resize: int = 256,
        image_size: int = 256,
        crop_size: int = 224,
        train_crop: str = "random",
        hflip: bool = True,
        pca_std: float = 0.1,
        pca_eigval: list[float] | None = None,
        pca_eigvec: list[list[float]] | None = None,
        mean: str | list[float] = "pixel",
        std: float | list[float] | None = None,
        mean_images: int = 10000,
        val_protocol: str = "center",
        test_protocol: str = "ten_crop",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool = True,
        prefetch_factor: int = 4,
        skip_bad_images: bool = False,
        decode: str = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if decode not in ("cpu", "cuda"):
            raise DataError(f"data.decode={decode!r}: use cpu (worker processes) or cuda (nvjpeg on the GPU)")
        if train_crop not in ("random", "random_resized"):
            raise DataError(f"data.train_crop={train_crop!r}: use random (the paper) or random_resized (torchvision)")
        if mean == "pixel" and train_crop == "random_resized":
            raise DataError(
                "data.mean=pixel needs data.train_crop=random (a mean image fits 256x256 inputs only); use mean=channel"
            )
        if isinstance(mean, str) and mean not in ("pixel", "channel"):
            raise DataError(f"data.mean={mean!r}: use pixel, channel or a list of 3 values in [0, 1]")
        if not crop_size <= image_size <= resize:
            raise DataError(
                f"need data.crop_size ({crop_size}) <= data.image_size ({image_size}) <= data.resize ({resize})"
            )
        if pca_std and (pca_eigval is None or pca_eigvec is None):
            raise DataError("data.pca_std > 0 needs data.pca_eigval and data.pca_eigvec (or set pca_std=0)")
        self.path, self.cache_dir = Path(path).expanduser(), Path(cache_dir).expanduser()
        self.num_classes, self.classes_arg = num_classes, classes
        self.max_per_class, self.max_val_per_class = max_per_class, max_val_per_class
        if minival_per_class < 0:
            raise DataError(f"data.minival_per_class={minival_per_class} must be >= 0 (0: validate on the val split)")
        self.minival_per_class = minival_per_class
        self.split_dirs = {"train": train_dir, "val": val_dir}
        self.prepare, self.resize, self.image_size, self.crop_size = prepare, resize, image_size, crop_size
        self.train_crop, self.hflip, self.pca_std = train_crop, hflip, pca_std
        self.pca = (torch.tensor(pca_eigval or [0.0] * 3), torch.tensor(pca_eigvec or [[0.0] * 3] * 3))
        self.mean, self.std, self.mean_images = mean, std, mean_images
        self.protocols = check_protocols(val_protocol, test_protocol)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory, self.prefetch_factor = num_workers, pin_memory, prefetch_factor
        self.skip_bad_images, self.decode, self.seed = skip_bad_images, decode, seed
        self.classes: list[str] = []
        self.class_names_by_wnid: dict[str, str] = {}
        self.samples: dict[str, list[Sample]] = {}
        self.normalize: Normalize | None = None
        self.skipped: set[str] = set()
        self._source_listing: dict[str, list[Sample]] | None = None

    # -- where the images are

    @property
    def prepared_root(self) -> Path:
        return self.cache_dir / f"resized{self.resize}-{source_key(self.path.resolve())}"

    @property
    def unpacked_root(self) -> Path:
        """Where official archives lying in ``data.path`` are unpacked (and the devkit parsed): the data root
        itself is only read."""
        return self.cache_dir / f"ilsvrc2012-{source_key(self.path.resolve())}"

    @property
    def root(self) -> Path:
        """The image tree: ``data.path`` when it holds the training split's folder, else the unpacked archives."""
        return self.path if (self.path / self.split_dirs["train"]).is_dir() else self.unpacked_root

    def _listing(self) -> dict[str, list[Sample]]:
        """The selected classes' images in the source tree (scanned once)."""
        if self._source_listing is None:
            self._source_listing = self._scan(self.root)
        return self._source_listing

    def _scan(self, root: Path) -> dict[str, list[Sample]]:
        train = root / self.split_dirs["train"]
        available = sorted(e.name for e in os.scandir(train) if e.is_dir())
        if not available:
            raise DataError(f"{train} holds no class folders; point data.path at a train/<wnid>/ + val/<wnid>/ tree")
        self.classes = pick_classes(available, self.classes_arg)
        if self.num_classes is not None and len(self.classes) != self.num_classes:
            raise DataError(
                f"{len(self.classes)} classes selected, data.num_classes is {self.num_classes}; set data.classes, or "
                "data.num_classes (null follows the data)"
            )
        self.num_classes = len(self.classes)
        train_samples, minival = list_split(train, self.classes, self.max_per_class, self.minival_per_class)
        return {
            "train": train_samples,
            "minival": minival,
            "val": list_split(root / self.split_dirs["val"], self.classes, self.max_val_per_class)[0],
        }

    def count_classes(self) -> int:
        """The number of classes selected (unpacking official archives first, once)."""
        if self.root == self.unpacked_root:
            unpack_archives(self.path, self.unpacked_root, list(self.split_dirs.values()))
        self._listing()
        return len(self.classes)

    def _in_prepared(self, path: str) -> str:
        return str(self.prepared_root / Path(path).relative_to(self.root))

    def _workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        devices = self.trainer.num_devices if self.trainer is not None else 1
        return max(1, len(os.sched_getaffinity(0)) // devices - 1)  # a core stays with the training process

    # -- prepare: archives, resized copy, mean

    def prepare_data(self) -> None:
        if not self.path.exists():
            raise DataError(
                f"no ImageNet at {self.path}; set data.path (or ALEXNET_IMAGENET) to a folder with train/ + val/ or the archives"
            )
        if self.root == self.unpacked_root:
            unpack_archives(self.path, self.unpacked_root, list(self.split_dirs.values()))
        write_class_names(self.path, self.unpacked_root)
        listing = self._listing()
        if self.prepare:
            self._write_resized(listing)
        self._measure_mean()

    def _write_resized(self, listing: dict[str, list[Sample]]) -> None:
        """The one-time rescale to shorter side ``resize`` (what the paper trained on), resumable file by file."""
        done = self._prepared_marker()
        if done.exists():
            return
        jobs = [(p, self._in_prepared(p), self.resize) for split in listing.values() for p, _ in split]
        jobs = [job for job in jobs if not Path(job[1]).exists()]
        log.info(
            "writing %d images rescaled to shorter side %d into %s (once)", len(jobs), self.resize, self.prepared_root
        )
        skipped = []
        with multiprocessing.get_context("fork").Pool(max(1, self._workers())) as pool:
            for failure in pool.imap_unordered(resize_file, jobs, chunksize=32):
                if failure is None:
                    continue
                if not self.skip_bad_images:
                    raise DataError(failure[1])
                log.warning("skipped: %s", failure[1])
                skipped.append(failure[0])
        if skipped:
            with open(self.prepared_root / "skipped.txt", "a") as f:
                f.writelines(f"{p}\n" for p in skipped)
        done.touch()

    def _prepared_marker(self) -> Path:
        """Exists once every selected image is in the resized copy."""
        key = source_key(
            self.classes, self.max_per_class, self.max_val_per_class, self.minival_per_class, *self.split_dirs.values()
        )
        return self.prepared_root / f".complete-{key}"

    def _image_samples(self) -> dict[str, list[Sample]]:
        """The listing, pointing into the resized copy when there is one, without the files skipped there."""
        listing = self._listing()
        if not self.prepare:
            return listing
        skipped_file = self.prepared_root / "skipped.txt"
        skipped = set(skipped_file.read_text().splitlines()) if skipped_file.exists() else set()
        self.skipped |= skipped
        return {s: [(self._in_prepared(p), y) for p, y in items if p not in skipped] for s, items in listing.items()}

    def _mean_file(self, train: list[Sample]) -> Path:
        key = source_key(len(train), train[0][0], train[-1][0], self.image_size, self.mean_images, self.resize)
        return self.cache_dir / f"imagenet-mean-{key}.pt"

    def _measure_mean(self) -> None:
        """The mean image over ``mean_images`` training images spread over the split (per-channel: its average)."""
        if not isinstance(self.mean, str):
            return
        train = self._image_samples()["train"]
        target = self._mean_file(train)
        if target.exists():
            return
        subset = train[:: max(1, len(train) // self.mean_images)][: self.mean_images]
        dataset = ImageFiles(subset, self.image_size, self.crop_size, skip_bad=self.skip_bad_images)
        loader = DataLoader(
            dataset, 64, sampler=[(i, 0) for i in range(len(subset))], collate_fn=collate, num_workers=self._workers()
        )
        total, count = torch.zeros(3, self.image_size, self.image_size, dtype=torch.float64), 0
        for images, *_ in loader:
            total += images.sum(0, dtype=torch.float64)
            count += len(images)
        log.info("measured the mean of %d training images into %s", count, target)
        atomic_save({"pixel_mean": (total / count / 255.0).float(), "images": count}, target)

    # -- setup and loaders

    def setup(self, stage: str | None = None) -> None:
        if self.samples:
            return
        if self.decode == "cuda" and not torch.cuda.is_available():
            raise DataError("data.decode=cuda needs a CUDA device and none is visible; use data.decode=cpu")
        self._listing()
        if self.prepare and not self._prepared_marker().exists():  # setup() without prepare_data() first
            self.prepare_data()
        self.samples = self._image_samples()
        self.class_names_by_wnid = devkit_names(self.path, self.unpacked_root)
        if isinstance(self.mean, str):
            target = self._mean_file(self.samples["train"])
            if not target.exists():
                self._measure_mean()
            pixel_mean = torch.load(target, weights_only=True)["pixel_mean"]
            mean = pixel_mean if self.mean == "pixel" else pixel_mean.mean(dim=(1, 2))
        else:
            mean = self.mean
        self.normalize = Normalize(mean, self.std if self.std is not None else 1.0)

    def _loader(self, split: str, train: bool) -> ResumableLoader:
        trainer = self.trainer
        batch_size, world_size, rank = global_batch(trainer, self.batch_size, self.eval_batch_size, train)
        samples = self.samples[split]
        dataset = ImageFiles(
            samples,
            self.image_size,
            self.crop_size,
            train=train,
            random_resized=self.train_crop == "random_resized",
            pca_std=self.pca_std,
            seed=self.seed,
            skip_bad=self.skip_bad_images,
            encoded=self.decode == "cuda",
        )
        shuffle = train and not (trainer is not None and trainer.overfit_batches)  # overfit: fixed batches
        sampler = EpochSampler(len(samples), batch_size // world_size, self.seed, shuffle, train, rank, world_size)
        workers = self._workers()
        return ResumableLoader(
            dataset,
            batch_size // world_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            progress=lambda: fit_progress(self.trainer),
        )

    def plain_batches(
        self, split: str, device: torch.device, indices: torch.Tensor | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(normalised centre crops, labels) of a split ("train", "minival" or "val"; or of its images at
        ``indices``), in order, unaugmented: what a trained network is shown for prediction."""
        samples = self.samples[split]
        if indices is not None:
            samples = [samples[i] for i in indices.tolist()]
        dataset = ImageFiles(samples, self.image_size, self.crop_size, skip_bad=self.skip_bad_images)
        loader = DataLoader(
            dataset, self.eval_batch_size, sampler=[(i, 0) for i in range(len(samples))], collate_fn=collate,
            num_workers=self._workers(),
        )  # fmt: skip
        for images, labels, *_ in loader:
            if len(labels):
                yield self.eval_views(images.to(device), "center"), labels.to(device)

    def images(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, crop, crop) of a split's images at ``indices``: the centre crop the network sees."""
        dataset = ImageFiles(self.samples[split], self.image_size, self.crop_size)
        return torch.stack([center_crop(dataset[(int(i), 0)][0], self.crop_size) for i in indices])

    def labels(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.samples[split][int(i)][1] for i in indices], dtype=torch.int64)

    def split_size(self, split: str) -> int:
        return len(self.samples[split])

    def class_names(self) -> list[str]:
        """The devkit's names where it gave them, else the wnids."""
        names = self.class_names_by_wnid or {}
        return [names.get(c, c) for c in self.classes]

    def train_dataloader(self) -> ResumableLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> ResumableLoader:
        """The minival (held out of train): it picks the best checkpoint and drives the plateau schedule."""
        return self._loader("minival" if self.minival_per_class else "val", train=False)

    def test_dataloader(self) -> ResumableLoader:
        """The val split, evaluated once at the end (its labels chose nothing, with a minival)."""
        return self._loader("val", train=False)

    # -- on the device

    def transfer_batch_to_device(self, batch: tuple[Any, ...], device: torch.device, dataloader_idx: int) -> Any:
        """With ``decode=cuda`` the workers send encoded files: nvjpeg decodes them straight into device memory."""
        images, labels, draws, skipped, paths = batch
        if not isinstance(images, Encoded):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        train = self.trainer is not None and self.trainer.training
        decoded, keep = self.decode_on_device(images.files(), paths, draws, device, train)
        skipped = skipped + [p for p, k in zip(paths, keep, strict=True) if not k]
        labels, draws = labels[keep], draws[keep]
        return decoded, labels.to(device, non_blocking=True), draws.to(device, non_blocking=True), skipped, []

    def decode_on_device(
        self, files: list[torch.Tensor], paths: list[str], draws: torch.Tensor, device: torch.device, train: bool
    ) -> tuple[torch.Tensor, list[bool]]:
        """Batched GPU JPEG decoding into the same uint8 squares (or random-resized crops) the CPU workers make.

        A file nvjpeg rejects (PNG, CMYK) is decoded on the CPU instead; one neither can read is an error, or
        with ``skip_bad_images`` left out (``keep`` marks the images kept).
        """
        if device.type == "cuda":
            # nvJPEG may write into blocks the caching allocator just recycled while queued kernels still read
            # them (pytorch/vision#9606: NaN losses on H100/H200): let the queued work finish first
            torch.cuda.current_stream(device).synchronize()
        try:
            decoded = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad file fails the batch: retry one by one
            decoded = [None] * len(files)
            for i, (data, path) in enumerate(zip(files, paths, strict=True)):
                try:
                    decoded[i] = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
                except RuntimeError:
                    try:
                        decoded[i] = to_tensor(load_rgb(path)).to(device)
                    except DataError:
                        if not self.skip_bad_images:
                            raise
        out, keep = [], []
        for image, box in zip(decoded, draws[:, 6:].int().tolist(), strict=True):
            keep.append(image is not None)
            if image is None:
                continue
            if train and self.train_crop == "random_resized":
                out.append(resized_crop(image, *box, [self.crop_size] * 2, antialias=True))
            else:
                if min(image.shape[-2:]) != self.image_size:
                    image = resize(image, [self.image_size], antialias=True)
                out.append(center_crop(image, self.image_size))
        return torch.stack(out), keep

    def on_after_batch_transfer(self, batch: tuple[Any, ...], dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, draws, skipped, _ = batch
        for path in skipped:
            if path not in self.skipped:
                self.skipped.add(path)
                log.warning("skipped unreadable image %s (%d so far)", path, len(self.skipped))
        trainer = self.trainer
        if trainer is not None and trainer.training and not trainer.overfit_batches:  # overfit: no augmentation
            return self.train_views(images, draws), labels
        if trainer is not None and trainer.overfit_batches:
            return self.eval_views(images, "center"), labels
        stage = "test" if trainer is not None and trainer.testing else "val"
        return self.eval_views(images, self.protocols[stage]), labels

    def train_views(self, images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> normalised float crops: PCA lighting, mean subtraction, random crop, flip."""
        shift = None
        if self.pca_std:
            eigval, eigvec = (t.to(images.device) for t in self.pca)
            shift = pca_lighting(draws[:, 3:6], eigval, eigvec)
        x = self.normalize(images, shift)
        if x.shape[-1] > self.crop_size:
            x = windows(x, draws[:, :2].long(), self.crop_size, self.crop_size)
        return hflip(x, draws[:, 2] > 0.5) if self.hflip else x

    def eval_views(self, images: torch.Tensor, protocol: str) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> normalised (N, 3, crop, crop) centre crops, or (N, 10, 3, crop, crop) views."""
        x = self.normalize(images)
        return center_crop(x, self.crop_size) if protocol == "center" else ten_crop(x, self.crop_size)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the network receives."""
        return 3, self.crop_size, self.crop_size

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the data: splits, protocols, classes, skipped images (also in the main
        process of a spawned DDP run, where only prepare_data ran)."""
        samples = self.samples or self._image_samples()
        names = self.class_names_by_wnid or devkit_names(self.path, self.unpacked_root)
        val_dir, train_dir = self.split_dirs["val"], self.split_dirs["train"]
        val = f"{val_dir}/ ({len(samples['val'])} images), {PROTOCOLS[self.protocols['test']]}"
        if self.minival_per_class:
            validation = (
                f"minival: the last {self.minival_per_class} images of each class of {train_dir}/ "
                f"({len(samples['minival'])} images, not trained on), {PROTOCOLS[self.protocols['val']]}"
            )
            evaluated = f"the val split {val}, evaluated once at the end"
        else:
            validation = f"the val split {val_dir}/ ({len(samples['val'])} images), {PROTOCOLS[self.protocols['val']]}"
            evaluated = f"the val split {val} again (it also chose the checkpoint: optimistic)"
        return {
            "val_split": validation,
            "test_split": evaluated,
            "train_images": len(samples["train"]),
            "classes": [[c, names.get(c, c)] for c in self.classes],
            "skipped_images": sorted(self.skipped),
        }
