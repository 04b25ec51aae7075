"""Files that are whole or absent: the one write helper checkpoints, caches and resized images share."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO


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
