"""What the DataModules share: their error type, cache keys and cache writes."""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image, UnidentifiedImageError

from alexnet_lab.batches import Batch
from alexnet_lab.errors import UserError
from alexnet_lab.protocols import PROTOCOLS


class DataError(UserError, RuntimeError):
    """Data that cannot be found or read; the message names the thing and the fix."""


class ClassCount:
    """``num_classes`` for both DataModules: ``data.num_classes`` if set (each checks it against the data when it
    reads it), else counted from the data (``count_classes``), once."""

    _num_classes: int | None  # set by the DataModule's __init__ (data.num_classes) and where it reads its classes

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self._num_classes = self.count_classes()  # type: ignore[attr-defined]  # each DataModule counts its own
        return self._num_classes


@runtime_checkable
class ClassificationData(Protocol):
    """What train, eval and predict use of a DataModule besides Lightning's own hooks; both DataModules keep it.

    Input units: the network receives ``(x / 255 - mean) / std`` with the data config's ``mean`` (three values,
    ``pixel``: the training split's mean image, ``channel``: its per-channel mean, or null) and ``std``; a model
    config whose init is calibrated for other units sets them (``conf/inputs/``), and the data follows.
    """

    test_split: str  # the split Lightning's test stage evaluates ("test"; ImageNet: "val")

    @property
    def num_classes(self) -> int: ...  # data.num_classes, or counted from the data

    @property
    def input_shape(self) -> tuple[int, int, int]: ...  # (C, H, W) of what the network receives

    def count_classes(self) -> int: ...
    def describe(self) -> dict[str, Any]: ...  # splits, evaluation views, classes, skipped images: for metrics.json
    def class_names(self) -> list[str]: ...
    def split_size(self, split: str) -> int: ...
    def images(self, split: str, indices: torch.Tensor) -> torch.Tensor: ...  # uint8 (N, C, H, W), as stored
    def labels(self, split: str, indices: torch.Tensor) -> torch.Tensor: ...
    def unaugmented_batches(
        self, split: str, device: torch.device, indices: torch.Tensor | None = None
    ) -> Iterator[Batch]: ...  # one centre view per image, in the network's units, in order


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}  # image files in class folders (any case)

# what PIL raises on a truncated, corrupt or foreign file, or on a header that claims more pixels than any photo
# (its decompression-bomb guard: above Image.MAX_IMAGE_PIXELS, 89 M, it warns, above twice that it raises; inside
# bomb_guarded() the warning is raised too, so such a file is refused before a pixel is decoded)
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
              Image.DecompressionBombWarning)  # fmt: skip


@contextlib.contextmanager
def bomb_guarded() -> Iterator[None]:
    """PIL's decompression-bomb warning raised as an error (one of UNREADABLE)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def check_std(std: float | list[float] | None) -> None:
    """data.std divides the inputs: every value must be a positive number (or the whole null)."""
    values = [std] if isinstance(std, (int, float)) else list(std or [])
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf") for v in values):
        raise DataError(f"data.std={std!r}: it divides the inputs, so each value must be a positive number; "
                        "e.g. data.std=0.00392156862745098 keeps 0-255 pixel units")  # fmt: skip


def check_protocols(val_protocol: str, test_protocol: str) -> dict[str, str]:
    """{"val": ..., "test": ...}, or a one-line error naming the key."""
    for key, value in (("val_protocol", val_protocol), ("test_protocol", test_protocol)):
        if value not in PROTOCOLS:
            raise DataError(f"data.{key}={value!r}: use one of {', '.join(PROTOCOLS)}")
    return {"val": val_protocol, "test": test_protocol}


def source_key(*parts: object) -> str:
    """A short stable hex key for a data source and the settings a cache made from it depends on."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:10]


def global_batch(trainer: Any, batch_size: int, eval_batch_size: int, train: bool) -> tuple[int, int, int]:
    """(global batch size, world size, rank) of a loader; the global batch must split evenly over the devices."""
    world_size = trainer.world_size if trainer is not None else 1
    rank = trainer.global_rank if trainer is not None else 0
    size = batch_size if train else eval_batch_size
    if size % world_size:
        key = "data.batch_size" if train else "data.eval_batch_size"
        raise DataError(
            f"{key}={size} (the global batch) does not split over {world_size} devices; use a multiple of {world_size}"
        )
    return size, world_size, rank


def fit_progress(trainer: Any) -> tuple[int, int]:
    """(epoch, training batches finished in it): what a mid-epoch checkpoint must skip on resume.

    Lightning 2.6 offers a stateful loader no public count of the batches trained (its fetcher runs a batch ahead
    of training, so the loader's own count would be off by one); the fit loop's batch progress is what Lightning
    restores its own position from (mid-epoch resume is open upstream: Lightning-AI/pytorch-lightning#19764)."""
    if trainer is None:
        return 0, 0
    return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.completed
