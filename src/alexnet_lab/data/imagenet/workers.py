"""What runs in the loader's worker processes: one image decoded to a fixed-size uint8 tensor with its augmentation
draws, and batches of them. Everything else happens batched on the device (see ``datamodule``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.io import read_file
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2.functional import pil_to_tensor, resized_crop

from alexnet_lab.data.common import UNREADABLE, DataError, bomb_guarded
from alexnet_lab.data.imagenet.decode import load_rgb, unreadable
from alexnet_lab.data.imagenet.source import Sample
from alexnet_lab.data.loader import derived_seed
from alexnet_lab.data.transforms import center_crop


class Draws(NamedTuple):
    """An image's augmentation numbers for one pass, all from (seed, epoch, index); stacked, a batch's (N, ...)."""

    crop: torch.Tensor  # int64 (2,): top, left of the training crop
    flip: torch.Tensor  # bool (): mirror the crop
    lighting: torch.Tensor  # float32 (3,): the PCA lighting alphas, N(0, pca_std)
    box: torch.Tensor  # int64 (4,): torchvision's random-resized box (top, left, height, width); zeros when unused

    @staticmethod
    def none() -> Draws:
        """The draws of an evaluation image: none."""
        return Draws(
            torch.zeros(2, dtype=torch.int64), torch.tensor(False), torch.zeros(3), torch.zeros(4, dtype=torch.int64)
        )

    @staticmethod
    def stack(draws: Sequence[Draws]) -> Draws:
        return Draws(*(torch.stack(field) for field in zip(*draws, strict=True)))

    def select(self, keep: torch.Tensor | list[bool]) -> Draws:
        """The draws of the images ``keep`` marks (a batch's)."""
        keep = torch.as_tensor(keep, dtype=torch.bool)
        return Draws(*(field[keep] for field in self))


class Item(NamedTuple):
    """One image as a worker hands it over."""

    image: torch.Tensor  # uint8 (3, S, S), or (3, crop, crop) random-resized, or the file's bytes (1-d) to decode later
    label: int
    draws: Draws
    path: str


class Encoded(NamedTuple):
    """A batch of encoded image files as one tensor (one shared-memory block per batch, not one per file)."""

    blob: torch.Tensor  # uint8, the files back to back
    sizes: torch.Tensor  # int64, each file's length

    def files(self) -> list[torch.Tensor]:
        return list(torch.split(self.blob, self.sizes.tolist()))


class WorkerBatch(NamedTuple):
    """A batch as the loader's workers make it; the DataModule turns it into a :class:`~alexnet_lab.batches.Batch`
    on the device."""

    images: torch.Tensor | Encoded  # uint8 (N, 3, S, S), or the encoded files (decode=cuda)
    labels: torch.Tensor  # int64 (N,)
    draws: Draws  # (N, ...) each
    skipped: list[str]  # unreadable images left out of the batch (data.skip_bad_images)
    paths: list[str]  # the kept images' files, in batch order


class ImageFiles(Dataset):
    """One image per ``(index, epoch)`` key (see :class:`~alexnet_lab.data.loader.EpochSampler`) as an :class:`Item`.

    ``image`` is the centre square after rescaling to shorter side ``size`` or, in training with
    ``random_resized``, torchvision's RandomResizedCrop at ``crop_size``; with ``encoded`` it is the file's bytes
    instead, for decoding on the GPU. The draws come from (seed, epoch, index): one draw per image per pass,
    whatever the worker and device counts. An unreadable image raises :class:`DataError` naming the file, or
    with ``skip_bad`` comes back as its path alone.
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

    def __getitem__(self, key: tuple[int, int] | int) -> Item | str:
        # (index, epoch) from EpochSampler; a plain index where Lightning swaps in its own sampler (overfit_batches)
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        path, label = self.samples[index]
        seed = derived_seed(self.seed, epoch, index)
        draws = Draws.none()
        try:
            if self.train and self.random_resized:
                draws = draws._replace(box=torch.tensor(self._random_resized_box(path, seed)))
            if self.encoded:
                image = read_file(path)
            elif self.train and self.random_resized:
                image = resized_crop(
                    pil_to_tensor(load_rgb(path)), *draws.box.tolist(), [self.crop_size] * 2, antialias=True
                )
            else:
                image = center_crop(pil_to_tensor(load_rgb(path, self.size)), self.size)
        except DataError:
            if self.skip_bad:
                return path
            raise
        if self.train:
            gen = torch.Generator().manual_seed(seed)
            room = (self.crop_size if self.random_resized else self.size) - self.crop_size + 1
            draws = draws._replace(
                crop=torch.randint(0, room, (2,), generator=gen),
                flip=torch.rand((), generator=gen) < 0.5,
                lighting=torch.randn(3, generator=gen) * self.pca_std,
            )
        return Item(image, label, draws, path)

    @staticmethod
    def _random_resized_box(path: str, seed: int) -> list[int]:
        """torchvision's RandomResizedCrop box (scale 0.08-1, ratio 3/4-4/3) for this image, seeded per image and
        epoch; only the file's header is read."""
        try:
            with bomb_guarded(), Image.open(path) as img, torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                return list(RandomResizedCrop.get_params(img, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3]))
        except UNREADABLE as err:
            raise unreadable(path, err) from err


def collate(items: list[Item | str]) -> WorkerBatch:
    """Stack the images (or join the files as :class:`Encoded` for decoding on the GPU); the paths of skipped
    images travel along so the main process can count them."""
    kept = [item for item in items if isinstance(item, Item)]
    skipped = [item for item in items if isinstance(item, str)]
    if not kept:
        empty = torch.empty(0, 3, 0, 0, dtype=torch.uint8)
        return WorkerBatch(
            empty, torch.empty(0, dtype=torch.int64), Draws.stack([Draws.none()]).select([False]), skipped, []
        )
    images = [item.image for item in kept]
    encoded = images[0].dim() == 1
    return WorkerBatch(
        Encoded(torch.cat(images), torch.tensor([len(f) for f in images])) if encoded else torch.stack(images),
        torch.tensor([item.label for item in kept]),
        Draws.stack([item.draws for item in kept]),
        skipped,
        [item.path for item in kept],
    )


class ResumableLoader(DataLoader):
    """A DataLoader Lightning saves in checkpoints: a mid-epoch resume skips the batches already trained."""

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress  # () -> (epoch, batches trained in it)

    def state_dict(self) -> dict[str, int]:
        epoch, trained = self.progress()
        return {"epoch": epoch, "batches_trained": trained}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, _ = self.progress()
        self.sampler.skip_batches = state["batches_trained"] if state["epoch"] == epoch else 0
