"""What a batch is: the contract between the DataModules, which make batches, and the LightningModule."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Views(NamedTuple):
    """Several views of every image, (N, V, C, H, W): the model scores the mean of their softmax (the paper's
    10-crop test)."""

    images: torch.Tensor


class Batch(NamedTuple):
    """Normalised images (N, C, H, W), or :class:`Views` of each, and their int64 labels (N,)."""

    inputs: torch.Tensor | Views
    labels: torch.Tensor
