"""A loader over a dataset that lives as one tensor on the training device: no workers, no per-image Python."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler

from alexnet_lab.batches import Batch, Views
from alexnet_lab.data.transforms import Normalize, center_crop, crop, crop_offsets, flip_draws, hflip, ten_crop


def derived_seed(*parts: int) -> int:
    """A 63-bit seed for each (run seed, epoch, ...) tuple, so any epoch or batch can be replayed exactly."""
    out = 0
    for part in parts:
        out = (out * 1_000_003 + part + 1) % (2**63)
    return out


def epoch_order(
    n: int, batch_size: int, seed: int, epoch: int, shuffle: bool, drop_last: bool, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Rank ``rank``'s sample indices for ``epoch`` in serving order; ``batch_size`` is the per-rank batch.

    Shuffled orders are a permutation drawn from (seed, epoch) alone. With ``drop_last`` the global batches are
    consecutive blocks of that order and rank r takes the r-th slice of each, so together the ranks see exactly
    what one process would; otherwise rank r takes every world_size-th sample.
    """
    order = (
        torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, epoch)))
        if shuffle
        else torch.arange(n)
    )
    if not drop_last:
        return order[rank::world_size]
    batches = n // (batch_size * world_size)
    return order[: batches * batch_size * world_size].view(batches, world_size, batch_size)[:, rank].reshape(-1)


class TensorBatches:
    """Batches are index slices of a per-epoch permutation of ``images``/``labels`` (already on the device).

    The order is :func:`epoch_order` and each global batch's augmentation depends only on (seed, epoch, batch),
    so a repeated run, or one resumed mid-epoch (``state_dict`` records how many batches were trained), sees
    the same batches. ``batch_size`` is the global batch: with ``world_size > 1`` each rank gets
    ``batch_size / world_size`` of it, and in training its own slice of the global batch's augmentation draws.
    ``views`` says what each image becomes: ``random`` (training) a ``crop_size`` window (default: the image
    size) at a random place in the image zero-padded by ``crop_padding`` (its centre with ``random_crop=False``),
    mirrored at random with ``hflip``;
    ``full`` the image as it is; ``center`` its centre ``crop_size`` window; ``ten_crop`` ten windows (4 corners
    and the centre, each mirrored: :class:`Views` of (N, 10, C, crop, crop)).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        normalize: Normalize,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        crop_padding: int = 0,
        crop_size: int | None = None,
        random_crop: bool = True,
        hflip: bool = False,
        views: str = "full",
        seed: int = 0,
        epoch_fn: Callable[[], int] = lambda: 0,
        trained_fn: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split evenly over {world_size} devices")
        self.images, self.labels = images, labels
        self.batch_size, self.normalize = batch_size // world_size, normalize  # this rank's share
        self.shuffle, self.drop_last = shuffle, drop_last
        if views not in ("random", "full", "center", "ten_crop"):
            raise ValueError(f"unknown views {views!r}: use random, full, center or ten_crop")
        self.crop_padding, self.hflip, self.views = crop_padding, hflip, views
        self.crop_size, self.random_crop = crop_size or images.shape[-1], random_crop
        self.seed, self.epoch_fn, self.trained_fn = seed, epoch_fn, trained_fn
        self.rank, self.world_size = rank, world_size
        self._resume_at = 0  # batches of the current epoch already trained before a resume

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.labels) // (self.batch_size * self.world_size)
        return math.ceil(len(range(self.rank, len(self.labels), self.world_size)) / self.batch_size)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's samples for ``epoch`` in the order they are served (on the CPU)."""
        return epoch_order(
            len(self.labels),
            self.batch_size,
            self.seed,
            epoch,
            self.shuffle,
            self.drop_last,
            self.rank,
            self.world_size,
        )

    def state_dict(self) -> dict[str, int]:
        """Stored in checkpoints by Lightning: the epoch and how many of its batches were trained."""
        return {"epoch": self.epoch_fn(), "batches_trained": self.trained_fn()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = state["batches_trained"] if state["epoch"] == self.epoch_fn() else 0

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch_fn()
        device = self.images.device
        order = self.indices(epoch).to(device)
        start, self._resume_at = self._resume_at, 0
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.normalize(self._views(self.images[idx], epoch, i))
            yield Batch(Views(x) if self.views == "ten_crop" else x, self.labels[idx])

    def _views(self, x: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        if self.views == "random":
            return self._augment(x, epoch, batch)
        if self.views == "center":
            return center_crop(x, self.crop_size)
        if self.views == "ten_crop":
            return ten_crop(x, self.crop_size)
        return x

    def _augment(self, x: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        """Crop and flip with draws made for the whole global batch; this rank applies its own slice of them."""
        room = x.shape[-1] + 2 * self.crop_padding - self.crop_size
        if room > 0 and not self.random_crop:
            x, room = center_crop(x, self.crop_size), 0
        if not (room > 0 or self.hflip):
            return x
        gen = torch.Generator(device=x.device).manual_seed(derived_seed(self.seed, epoch, batch))
        mine = slice(self.rank * len(x), (self.rank + 1) * len(x)) if self.drop_last else slice(0, len(x))
        size = len(x) * self.world_size if self.drop_last else len(x)
        if room > 0:
            x = crop(x, self.crop_padding, crop_offsets(size, room, gen)[mine], self.crop_size)
        if self.hflip:
            x = hflip(x, flip_draws(size, gen)[mine])
        return x


class EpochSampler(Sampler[tuple[int, int]]):
    """Sample indices for loaders with worker processes: :func:`epoch_order`, tagged with the epoch.

    It yields ``(index, epoch)`` so a dataset can draw each image's augmentation from (seed, epoch, index): one
    draw per image per pass, the same whatever the worker count, rank count or a mid-epoch resume. It splits the
    data over ranks itself (the trainer runs with ``use_distributed_sampler: false``, so Lightning keeps it);
    Lightning calls ``set_epoch`` every epoch. ``skip_batches`` drops the first batches of the next pass (resume).
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, shuffle: bool, drop_last: bool, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed  # batch_size: per rank
        self.shuffle, self.drop_last, self.rank, self.world_size = shuffle, drop_last, rank, world_size
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // (self.batch_size * self.world_size) * self.batch_size
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(
            self.n, self.batch_size, self.seed, self.epoch, self.shuffle, self.drop_last, self.rank, self.world_size
        )
        start, self.skip_batches = self.skip_batches * self.batch_size, 0
        return ((int(i), self.epoch) for i in order[start:])
