"""What the DataModules share: their error type, cache keys and cache writes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from alexnet_lab.files import atomic_write


class DataError(RuntimeError):
    """Data that cannot be found or read; the message names the thing and the fix."""


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}  # image files in class folders (any case)

# evaluation views: data.val_protocol / data.test_protocol, and how metrics.json names them
PROTOCOLS = {"center": "centre crop", "ten_crop": "10-crop (4 corners + centre, each mirrored; softmax averaged)"}


def check_protocols(val_protocol: str, test_protocol: str) -> dict[str, str]:
    """{"val": ..., "test": ...}, or a one-line error naming the key."""
    for key, value in (("val_protocol", val_protocol), ("test_protocol", test_protocol)):
        if value not in PROTOCOLS:
            raise DataError(f"data.{key}={value!r}: use one of {', '.join(PROTOCOLS)}")
    return {"val": val_protocol, "test": test_protocol}


def source_key(*parts: object) -> str:
    """A short stable hex key for a data source and the settings a cache made from it depends on."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:10]


def atomic_save(obj: object, target: Path) -> None:
    """torch.save that readers see whole or not at all."""
    atomic_write(target, lambda f: torch.save(obj, f))


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
    """(epoch, training batches finished in it): what a mid-epoch checkpoint must skip on resume."""
    if trainer is None:
        return 0, 0
    return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.completed
