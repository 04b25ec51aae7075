"""The one-time passes over the data: a copy rescaled to the training size (resumable file by file) and the mean
image of the training split."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from alexnet_lab.data.common import DataError
from alexnet_lab.data.imagenet.decode import resize_file
from alexnet_lab.data.imagenet.source import Sample
from alexnet_lab.data.imagenet.workers import ImageFiles, collate

log = logging.getLogger(__name__)


def write_resized(jobs: list[tuple[str, str, int]], workers: int, skip_bad: bool) -> list[str]:
    """Write each ``(source, copy, shorter side)`` job's copy that does not exist yet, in ``workers`` processes;
    the sources that could not be read (with ``skip_bad``; else the first one raises :class:`DataError`)."""
    todo = [job for job in jobs if not Path(job[1]).exists()]  # an interrupted pass resumes where it stopped
    log.info("writing %d of %d images rescaled (once)", len(todo), len(jobs))
    skipped = []
    with multiprocessing.get_context("fork").Pool(max(1, workers)) as pool:
        for failure in pool.imap_unordered(resize_file, todo, chunksize=32):
            if failure is None:
                continue
            if not skip_bad:
                raise DataError(failure[1])
            log.warning("skipped: %s", failure[1])
            skipped.append(failure[0])
    return skipped


def mean_image(samples: list[Sample], size: int, workers: int, skip_bad: bool) -> tuple[torch.Tensor, int]:
    """The float32 (3, size, size) mean, in [0, 1], of the samples' centre squares, and how many were read."""
    dataset = ImageFiles(samples, size, size, skip_bad=skip_bad)
    loader = DataLoader(
        dataset, 64, sampler=[(i, 0) for i in range(len(samples))], collate_fn=collate, num_workers=workers
    )
    total, count = torch.zeros(3, size, size, dtype=torch.float64), 0
    for batch in loader:
        total += batch.images.sum(0, dtype=torch.float64)
        count += len(batch.images)
    return (total / count / 255.0).float(), count
