"""Building blocks shared by the AlexNet family: response normalisations, locally connected layers, the ablation
switches, and the contract by which a network asks for per-layer optimizer settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["lrn", "batchnorm", "none"]
Pool = Literal["overlapping", "non_overlapping"]
Activation = Literal["relu", "tanh"]


class ResponseNorm(nn.Module):
    """b = a / divisor(a): what every response normalisation computes, and what a monitor can measure.

    The smallest divisor is k^beta (where all activations are 0): a divisor that stays there is a constant
    rescaling the next layer absorbs, not a normalisation.
    """

    k: float
    beta: float

    def divisor(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.divisor(x)


class LRN(ResponseNorm):
    """Local response normalisation across channels, exactly as written in the paper (Sec. 3.3).

    b_i = a_i / (k + alpha * sum_{j = i - n//2}^{i + n//2} a_j^2) ^ beta

    ``torch.nn.LocalResponseNorm`` uses ``alpha / n`` in place of ``alpha``; this layer takes the paper's
    constants as they are. Krizhevsky's cuda-convnet2 configs (scale 1e-4 divided by size 5) equal
    ``alpha=2e-5`` in this form. ``groups=2`` normalises each tower's channels among themselves, as each of the
    paper's two GPUs did: no window crosses the boundary between towers. The channel-window sum is n shifted
    adds of the zero-padded squares, cheaper on a CPU than the 3-d average pooling torch uses.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, groups: int = 1) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LRN size must be odd and >= 1 (a window centred on each channel), got {size}")
        if groups < 1:
            raise ValueError(f"LRN groups must be >= 1, got {groups}")
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def divisor(self, x: torch.Tensor) -> torch.Tensor:
        n, channels, h, w = x.shape
        if channels % self.groups:
            raise ValueError(f"LRN with groups={self.groups} got {channels} channels, not divisible")
        per = channels // self.groups
        half = self.size // 2
        squares = F.pad((x * x).reshape(n, self.groups, per, h, w), (0, 0, 0, 0, half, half))
        window = squares[:, :, :per]
        for offset in range(1, self.size):
            window = window + squares[:, :, offset : offset + per]
        return (self.k + self.alpha * window.reshape(n, channels, h, w)).pow(self.beta)

    def extra_repr(self) -> str:
        towers = f", groups={self.groups}" if self.groups > 1 else ""
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}{towers} (paper form)"


class SpatialResponseNorm(ResponseNorm):
    """cuda-convnet's ``rnorm``: response normalisation over a ``size`` x ``size`` window within each map.

    b = a / (k + alpha * sum over the window centred on the pixel, zero beyond the border, of a^2) ^ beta

    ``alpha`` is in the paper's form (not divided by anything); cuda-convnet's ``scale`` is ``alpha * size^2``.
    torch has no such layer.
    """

    def __init__(self, size: int = 3, alpha: float = 5e-5 / 9, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ValueError(f"spatial response norm size must be odd and >= 1, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def divisor(self, x: torch.Tensor) -> torch.Tensor:
        # average pooling counts the zero padding, so average x size^2 is the window's sum
        window = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=True)
        return (self.k + self.alpha * self.size**2 * window).pow(self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}x{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k} (paper form)"


class LocallyConnected2d(nn.Module):
    """A convolution whose filters are not shared: each output position has its own weights and bias
    (cuda-convnet's ``local`` layer). torch has no such layer.

    out[n, o, y, x] = bias[o, y, x] + sum_{c, i, j} weight[y * W_out + x, o, c * k * k + i * k + j]
                      * in_padded[n, c, y * stride + i, x * stride + j]
    """

    def __init__(
        self, in_channels: int, out_channels: int, in_size: int, kernel_size: int, padding: int = 0, stride: int = 1
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.in_size = in_channels, out_channels, in_size
        self.kernel_size, self.padding, self.stride = kernel_size, padding, stride
        self.out_size = (in_size + 2 * padding - kernel_size) // stride + 1
        positions = self.out_size**2
        self.weight = nn.Parameter(torch.empty(positions, out_channels, in_channels * kernel_size**2))
        self.bias = nn.Parameter(torch.zeros(out_channels, self.out_size, self.out_size))
        nn.init.normal_(self.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (self.in_channels, self.in_size, self.in_size):
            raise ValueError(
                f"LocallyConnected2d expects (N, {self.in_channels}, {self.in_size}, {self.in_size}), got {tuple(x.shape)}"
            )
        patches = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # (N, C*k*k, L)
        out = torch.bmm(patches.permute(2, 0, 1), self.weight.transpose(1, 2))  # (L, N, O): one matmul per position
        return out.permute(1, 2, 0).reshape(len(x), self.out_channels, self.out_size, self.out_size) + self.bias

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, in_size={self.in_size}, kernel_size={self.kernel_size}, "
            f"padding={self.padding}, stride={self.stride} (unshared weights at {self.out_size}x{self.out_size})"
        )


@dataclass(frozen=True)
class ParamGroup:
    """Parameters that share their optimizer settings: a multiple of the optimizer's learning rate and a weight
    decay of their own (None: the optimizer's). A network that has per-layer settings, as cuda-convnet's configs
    do, lists its parameters in such groups through a ``param_groups()`` method."""

    name: str
    params: list[nn.Parameter]
    lr_scale: float = 1.0
    weight_decay: float | None = None


def dropout(p: float) -> nn.Dropout:
    """torch's Dropout, refusing p outside [0, 1) (p = 1 would drop every unit)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout={p} must be in [0, 1): the probability of dropping a unit")
    return nn.Dropout(p)


def activation(kind: Activation) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {kind!r}: use relu or tanh")


def pool(kind: Pool, mode: Literal["max", "avg"] = "max", ceil_mode: bool = False) -> nn.Module:
    """The paper's overlapping pool (3x3, stride 2) or the traditional non-overlapping one (2x2, stride 2)."""
    if kind == "overlapping":
        size = 3
    elif kind == "non_overlapping":
        size = 2
    else:
        raise ValueError(f"unknown pool {kind!r}: use overlapping or non_overlapping")
    layer = nn.MaxPool2d if mode == "max" else nn.AvgPool2d
    return layer(size, stride=2, ceil_mode=ceil_mode)


def conv_block(
    in_ch: int,
    out_ch: int,
    kernel: int,
    *,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    norm: Norm = "none",
    act: Activation = "relu",
    lrn: dict | None = None,
    lrn_groups: int = 1,
) -> list[nn.Module]:
    """Conv -> [BatchNorm] -> activation -> [LRN].

    BatchNorm goes before the non-linearity (as in the tutorial), LRN after it (as in the paper), within each of
    ``lrn_groups`` towers.
    """
    if norm not in ("lrn", "batchnorm", "none"):
        raise ValueError(f"unknown norm {norm!r}: use lrn, batchnorm or none")
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups)]
    if norm == "batchnorm":
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(activation(act))
    if norm == "lrn":
        layers.append(LRN(**(lrn or {}), groups=lrn_groups))
    return layers
