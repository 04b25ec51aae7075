"""A loader over a dataset that lives as one tensor on the training device: no workers, no per-image Python."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from alexnet_lab.data.transforms import Normalize, random_crop, random_hflip


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct 63-bit seed for every (run seed, epoch, stream) so that an epoch can be replayed exactly."""
    return (seed * 1_000_003 + epoch * 7_919 + stream) % (2**63)


class TensorBatches:
    """Batches are index slices of a per-epoch permutation of ``images``/``labels`` (already on the device).

    The permutation and the augmentation draws depend only on (seed, epoch), so a resumed or repeated run
    sees the same batches. With ``world_size > 1`` every rank takes its own equal share of the permutation.
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
        hflip: bool = False,
        seed: int = 0,
        epoch_fn: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.normalize = batch_size, normalize
        self.shuffle, self.drop_last = shuffle, drop_last
        self.crop_padding, self.hflip = crop_padding, hflip
        self.seed, self.epoch_fn = seed, epoch_fn
        self.rank, self.world_size = rank, world_size

    def _per_rank(self) -> int:
        n = len(self.labels)
        return n // self.world_size if self.drop_last or self.world_size > 1 else n

    def __len__(self) -> int:
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample order for ``epoch`` (on the CPU)."""
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch)))
        else:
            order = torch.arange(n)
        per_rank = self._per_rank()
        return order[self.rank * per_rank : (self.rank + 1) * per_rank] if self.world_size > 1 else order[:per_rank]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch_fn()
        device = self.images.device
        order = self.indices(epoch).to(device)
        augment = self.crop_padding > 0 or self.hflip
        gen = torch.Generator(device=device).manual_seed(epoch_seed(self.seed, epoch, stream=1 + self.rank))
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images[idx]
            if augment:
                if self.crop_padding > 0:
                    x = random_crop(x, self.crop_padding, gen)
                if self.hflip:
                    x = random_hflip(x, gen)
            yield self.normalize(x), self.labels[idx]
