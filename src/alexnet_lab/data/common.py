"""What the DataModules share: their error type, cache keys and cache writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from alexnet_lab.files import atomic_write


class DataError(RuntimeError):
    """Data that cannot be found or read; the message names the thing and the fix."""


def source_key(*parts: object) -> str:
    """A short stable hex key for a data source and the settings a cache made from it depends on."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:10]


def atomic_save(obj: object, target: Path) -> None:
    """torch.save that readers see whole or not at all."""
    atomic_write(target, lambda f: torch.save(obj, f))
