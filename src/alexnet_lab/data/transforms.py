"""Augmentation and normalisation on whole batches of tensors, on whatever device holds them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF


def crop_offsets(n: int, room: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2) top/left offsets of windows that leave ``room`` pixels to spare (padded side - window side),
    uniform in [0, room]."""
    return torch.randint(0, room + 1, (n, 2), generator=generator, device=generator.device)


def windows(x: torch.Tensor, offsets: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Cut each image's ``height`` x ``width`` window at its own (top, left) from a batch (N, C, H, W), in one gather."""
    n, c = x.shape[:2]
    rows = offsets[:, 0, None] + torch.arange(height, device=x.device)  # (N, height)
    cols = offsets[:, 1, None] + torch.arange(width, device=x.device)  # (N, width)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return x[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def crop(x: torch.Tensor, padding: int, offsets: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Zero-pad a batch (N, C, H, W) by ``padding`` and cut each image's ``size`` x ``size`` window (default H x W)
    at its (top, left)."""
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    return windows(padded, offsets, size or x.shape[-2], size or x.shape[-1])


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the images whose ``flip`` entry is True left-right."""
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def flip_draws(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) booleans, each True with probability 1/2."""
    return torch.rand(n, generator=generator, device=generator.device) < 0.5


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of every image of a batch (..., H, W): torchvision's, on any batch."""
    return TF.center_crop(x, [size])


def ten_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's test views of a batch (N, C, H, W), stacked (N, 10, C, size, size): torchvision's ten_crop (four
    corners and the centre, then the same five of the mirrored image)."""
    return torch.stack(TF.ten_crop(x, [size]), dim=1)


def pca_lighting(alphas: torch.Tensor, eigval: torch.Tensor, eigvec: torch.Tensor) -> torch.Tensor:
    """The paper's colour augmentation: per image the RGB shift sum_i alpha_i * lambda_i * p_i, shaped (N, 3, 1, 1).

    ``alphas`` (N, 3) are the image's N(0, sigma) draws, ``eigval`` (3,) and ``eigvec`` (3, 3, columns p_i) the
    eigen-decomposition of the covariance of RGB pixel values.
    """
    return ((alphas * eigval) @ eigvec.T)[:, :, None, None]


class Normalize:
    """uint8 (N, C, H, W) or (N, views, C, H, W) -> float32 in [0, 1], then (x - mean) / std when mean and std are
    given.

    ``mean`` is per channel (C values) or per pixel (a (C, H, W) image, the paper's mean image); images smaller
    than the mean image (crops) have its centre subtracted, as cuda-convnet's cropping data provider did.
    ``std`` is per channel or one number for all channels: 1/255 keeps 0-255 pixel units.
    """

    def __init__(
        self, mean: Sequence[float] | torch.Tensor | None = None, std: Sequence[float] | float | None = None
    ) -> None:
        if (mean is None) != (std is None):
            raise ValueError("normalisation needs both mean and std, or neither (x / 255 only)")
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        if self.mean is not None and self.mean.dim() == 1:
            self.mean = self.mean.view(1, -1, 1, 1)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """``shift`` (broadcastable, in [0, 1] units) is added before the mean is subtracted: PCA lighting."""
        out = x.float().div_(255.0)
        if shift is not None:
            out.add_(shift)
        if self.mean is not None:
            if self.mean.device != x.device:  # moved once, not per batch
                self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
            mean = self.mean
            if mean.shape[-1] > x.shape[-1]:
                mean = center_crop(mean, x.shape[-1])
            out.sub_(mean).div_(self.std)
        return out
