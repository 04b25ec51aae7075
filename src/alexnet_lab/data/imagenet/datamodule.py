"""The ImageNet DataModule: finds and prepares the data once, serves worker batches, and finishes every batch on
the device (mean subtraction, PCA lighting, crops, flips, evaluation views)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from alexnet_lab.batches import Batch, Views
from alexnet_lab.data.common import (
    ClassCount,
    DataError,
    check_protocols,
    check_std,
    fit_progress,
    global_batch,
    source_key,
)
from alexnet_lab.data.imagenet.gpu import decode_files, to_training_size
from alexnet_lab.data.imagenet.prepare import mean_image, write_resized
from alexnet_lab.data.imagenet.source import (
    Sample,
    devkit_names,
    list_split,
    pick_classes,
    unpack_archives,
    write_class_names,
)
from alexnet_lab.data.imagenet.workers import Draws, Encoded, ImageFiles, ResumableLoader, WorkerBatch, collate
from alexnet_lab.data.loader import EpochSampler
from alexnet_lab.data.transforms import Normalize, center_crop, hflip, pca_lighting, ten_crop, windows
from alexnet_lab.files import atomic_write
from alexnet_lab.protocols import PROTOCOLS

log = logging.getLogger(__name__)


class ImageNetDataModule(ClassCount, L.LightningDataModule):
    """ILSVRC-2012 (or any ``train/<class>/`` + ``val/<class>/`` JPEG tree) with the paper's preprocessing.

    ``prepare_data`` unpacks official archives once, writes a copy rescaled to shorter side ``stored_size`` (so epochs
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
        stored_size: int = 256,
        resize_size: int = 256,
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
        if not crop_size <= resize_size <= stored_size:
            raise DataError(
                f"need data.crop_size ({crop_size}) <= data.resize_size ({resize_size}) <= data.stored_size ({stored_size})"
            )
        if pca_std and (pca_eigval is None or pca_eigvec is None):
            raise DataError("data.pca_std > 0 needs data.pca_eigval and data.pca_eigvec (or set pca_std=0)")
        self.path, self.cache_dir = Path(path).expanduser(), Path(cache_dir).expanduser()
        self._num_classes, self.classes_arg = num_classes, classes
        self.max_per_class, self.max_val_per_class = max_per_class, max_val_per_class
        if minival_per_class < 0:
            raise DataError(f"data.minival_per_class={minival_per_class} must be >= 0 (0: validate on the val split)")
        self.minival_per_class = minival_per_class
        self.split_dirs = {"train": train_dir, "val": val_dir}
        self.prepare, self.stored_size, self.resize_size, self.crop_size = prepare, stored_size, resize_size, crop_size
        self.train_crop, self.hflip, self.pca_std = train_crop, hflip, pca_std
        self.pca = (torch.tensor(pca_eigval or [0.0] * 3), torch.tensor(pca_eigvec or [[0.0] * 3] * 3))
        check_std(std)
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
        return self.cache_dir / f"resized{self.stored_size}-{source_key(self.path.resolve())}"

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
        if self._num_classes is not None and len(self.classes) != self._num_classes:
            raise DataError(
                f"{len(self.classes)} classes selected, data.num_classes is {self._num_classes}; set data.classes, or "
                "data.num_classes (null follows the data)"
            )
        self._num_classes = len(self.classes)
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
                f"no ImageNet at {self.path}; set data.path (once per machine: conf/local/default.yaml, or "
                "ALEXNET_IMAGENET) to a folder with train/ + val/ or the archives"
            )
        if self.root == self.unpacked_root:
            unpack_archives(self.path, self.unpacked_root, list(self.split_dirs.values()))
        write_class_names(self.path, self.unpacked_root)
        listing = self._listing()
        if self.prepare:
            self._write_resized(listing)
        self._measure_mean()

    def _write_resized(self, listing: dict[str, list[Sample]]) -> None:
        """The one-time rescale to shorter side ``stored_size`` (what the paper trained on), resumable file by file."""
        done = self._prepared_marker()
        if done.exists():
            return
        jobs = [(p, self._in_prepared(p), self.stored_size) for split in listing.values() for p, _ in split]
        log.info("rescaling to shorter side %d into %s", self.stored_size, self.prepared_root)
        skipped = write_resized(jobs, self._workers(), self.skip_bad_images)
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
        key = source_key(len(train), train[0][0], train[-1][0], self.resize_size, self.mean_images, self.stored_size)
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
        pixel_mean, count = mean_image(subset, self.resize_size, self._workers(), self.skip_bad_images)
        log.info("measured the mean of %d training images into %s", count, target)
        atomic_write(target, lambda f: torch.save({"pixel_mean": pixel_mean, "images": count}, f))

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
            self.resize_size,
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

    def unaugmented_batches(
        self, split: str, device: torch.device, indices: torch.Tensor | None = None
    ) -> Iterator[Batch]:
        """(normalised centre crops, labels) of a split ("train", "minival" or "val"; or of its images at
        ``indices``), in order, unaugmented: what a trained network is shown for prediction."""
        samples = self.samples[split]
        if indices is not None:
            samples = [samples[i] for i in indices.tolist()]
        dataset = ImageFiles(samples, self.resize_size, self.crop_size, skip_bad=self.skip_bad_images)
        loader = DataLoader(
            dataset, self.eval_batch_size, sampler=[(i, 0) for i in range(len(samples))], collate_fn=collate,
            num_workers=self._workers(),
        )  # fmt: skip
        for batch in loader:
            if len(batch.labels):
                yield Batch(self.eval_views(batch.images.to(device), "center"), batch.labels.to(device))

    def images(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, crop, crop) of a split's images at ``indices``: the centre crop the network sees."""
        dataset = ImageFiles(self.samples[split], self.resize_size, self.crop_size)
        return torch.stack([center_crop(dataset[(int(i), 0)].image, self.crop_size) for i in indices])

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

    def transfer_batch_to_device(self, batch: WorkerBatch, device: torch.device, dataloader_idx: int) -> WorkerBatch:
        """With ``decode=cuda`` the workers send encoded files: nvjpeg decodes them straight into device memory.
        Anything else (a plain tensor: the model summary's example input) moves as Lightning moves it."""
        if not isinstance(batch, WorkerBatch) or not isinstance(batch.images, Encoded):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        train = self.trainer is not None and self.trainer.training
        decoded, keep = self.decode_on_device(batch.images.files(), batch.paths, batch.draws, device, train)
        skipped = batch.skipped + [p for p, k in zip(batch.paths, keep, strict=True) if not k]
        labels, draws = batch.labels[torch.tensor(keep, dtype=torch.bool)], batch.draws.select(keep)
        draws = Draws(*(field.to(device, non_blocking=True) for field in draws))
        return WorkerBatch(decoded, labels.to(device, non_blocking=True), draws, skipped, [])

    def decode_on_device(
        self, files: list[torch.Tensor], paths: list[str], draws: Draws, device: torch.device, train: bool
    ) -> tuple[torch.Tensor, list[bool]]:
        """The files decoded on ``device`` into the same uint8 squares (or random-resized crops) the CPU workers
        make, and which were kept (an unreadable file is an error, or with ``skip_bad_images`` left out)."""
        decoded = decode_files(files, paths, device, self.skip_bad_images)
        random_resized = train and self.train_crop == "random_resized"
        out = [
            to_training_size(image, self.resize_size, box if random_resized else None, self.crop_size)
            for image, box in zip(decoded, draws.box.tolist(), strict=True)
            if image is not None
        ]
        return torch.stack(out), [image is not None for image in decoded]

    def on_after_batch_transfer(self, batch: WorkerBatch, dataloader_idx: int) -> Batch:
        if not isinstance(batch, WorkerBatch):  # the model summary's example input: already the network's input
            return batch
        for path in batch.skipped:
            if path not in self.skipped:
                self.skipped.add(path)
                log.warning("skipped unreadable image %s (%d so far)", path, len(self.skipped))
        trainer = self.trainer
        if trainer is not None and trainer.training and not trainer.overfit_batches:  # overfit: no augmentation
            return Batch(self.train_views(batch.images, batch.draws), batch.labels)
        if trainer is not None and trainer.overfit_batches:
            return Batch(self.eval_views(batch.images, "center"), batch.labels)
        stage = "test" if trainer is not None and trainer.testing else "val"
        return Batch(self.eval_views(batch.images, self.protocols[stage]), batch.labels)

    def train_views(self, images: torch.Tensor, draws: Draws) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> normalised float crops: PCA lighting, mean subtraction, random crop, flip."""
        shift = None
        if self.pca_std:
            eigval, eigvec = (t.to(images.device) for t in self.pca)
            shift = pca_lighting(draws.lighting, eigval, eigvec)
        x = self.normalize(images, shift)
        if x.shape[-1] > self.crop_size:
            x = windows(x, draws.crop, self.crop_size, self.crop_size)
        return hflip(x, draws.flip) if self.hflip else x

    def eval_views(self, images: torch.Tensor, protocol: str) -> torch.Tensor | Views:
        """uint8 (N, 3, S, S) -> normalised (N, 3, crop, crop) centre crops, or :class:`Views` of the 10 crops."""
        x = self.normalize(images)
        return center_crop(x, self.crop_size) if protocol == "center" else Views(ten_crop(x, self.crop_size))

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
            "test_images": len(samples["val"]),
            "classes": [[c, names.get(c, c)] for c in self.classes],
            "skipped_images": sorted(self.skipped),
        }
