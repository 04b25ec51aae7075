"""Files that are whole or absent: the one write helper checkpoints, caches, records and resized images share; a
file's digest; and the one way a command shows its pictures in TensorBoard."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TextIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object], sync: bool = True) -> None:
    """Write through ``write`` into a temporary file beside ``path``, then rename it over ``path``.

    A kill or a full disk during the write leaves the previous file (or none) as it was; ``sync`` also
    flushes the bytes to disk before the rename, for files a crash must not lose. Nothing is written through a
    link: the temporary file is created anew (a link planted at its name is refused) and the rename replaces a
    link at ``path`` instead of following it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a stale one from a killed write of this pid, or a planted link
    try:
        with open(tmp, "xb") as f:  # O_CREAT | O_EXCL: fails on anything at that name, a link included
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex: which file it is, whatever it is called or wherever it was copied."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_record(path: Path) -> dict[str, Any] | None:
    """A ``metrics.json`` as a dict, or None when there is none or it is not one (a file from elsewhere, a link)."""
    try:
        record = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


class NoFollowFileHandler(logging.FileHandler):
    """The run's log file, appended to as logging.FileHandler does, but never through a link planted at its name."""

    def _open(self) -> TextIO:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.baseFilename, flags, 0o644)
        except OSError as err:  # Hydra sets logging up before any code of ours runs: say it here, in one line
            sys.stderr.write(f"error: cannot open the run's log {self.baseFilename} ({err.strerror}); a run dir is "
                             "written only in place: remove what lies at that name\n")  # fmt: skip
            raise SystemExit(2) from err
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def pictures_to_tensorboard(folder: Path, pictures: dict[str, Path], texts: dict[str, str] | None = None) -> None:
    """PNG files as TensorBoard images (IMAGES tab, tag -> file) and texts (TEXT tab) in an event file in ``folder``:
    how alexnet-predict and alexnet-report show what they drew beside the training curves."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for tag, body in (texts or {}).items():
            writer.add_text(tag, body)
        for tag, png in pictures.items():
            with Image.open(png) as image:
                writer.add_image(tag, np.asarray(image.convert("RGB")), 0, dataformats="HWC")
