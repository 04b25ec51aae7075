"""Augmentation and normalisation on whole batches of uint8 tensors, on whatever device holds them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def crop_offsets(n: int, padding: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2) top/left offsets into an image padded by ``padding`` on each side, uniform in [0, 2 * padding]."""
    return torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=generator.device)


def crop(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad a batch (N, C, H, W) by ``padding`` and cut each image's HxW window at its (top, left), in one gather."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the images whose ``flip`` entry is True left-right."""
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def flip_draws(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) booleans, each True with probability 1/2."""
    return torch.rand(n, generator=generator, device=generator.device) < 0.5


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """One random crop of the zero-padded image per image of the batch."""
    return crop(x, padding, crop_offsets(x.shape[0], padding, generator))


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    return hflip(x, flip_draws(x.shape[0], generator))


class Normalize:
    """uint8 (N, C, H, W) -> float32 in [0, 1], then (x - mean) / std per channel when mean and std are given."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        if (mean is None) != (std is None):
            raise ValueError("normalisation needs both mean and std, or neither (x / 255 only)")
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x.float().div_(255.0)
        if self.mean is not None:
            out.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
        return out
