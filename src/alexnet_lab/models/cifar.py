"""32x32 networks for CIFAR-10: the tutorial's AlexNet and a cuda-convnet-style four-layer net."""

from __future__ import annotations

import torch
from torch import nn

from alexnet_lab.models import layers as L


class AlexNetCIFAR(nn.Module):
    """The Keras tutorial's AlexNet for 32x32 inputs, layer for layer.

    Conv 96@3x3 valid -> BN -> ReLU -> pool; Conv 256@3x3 valid -> BN -> ReLU -> pool; Conv 384, 384, 256
    @3x3 same with ReLU; pool; Dense 2048, Dense 2048 (dropout 0.5 each); Dense 10. ``norm`` swaps the two
    BatchNorms for the paper's LRN (after the ReLU) or removes them; ``groups=2`` splits conv2, conv4 and
    conv5 into two towers as in the paper.
    """

    def __init__(
        self,
        num_classes: int = 10,
        norm: L.Norm = "batchnorm",
        pool: L.Pool = "overlapping",
        activation: L.Activation = "relu",
        dropout: float = 0.5,
        groups: int = 1,
        lrn: dict | None = None,
    ) -> None:
        super().__init__()
        act = dict(act=activation)
        self.features = nn.Sequential(
            *L.conv_block(3, 96, 3, norm=norm, lrn=lrn, **act),  # 30x30
            L.pool(pool),  # 14x14 (15x15 non-overlapping)
            *L.conv_block(96, 256, 3, groups=groups, norm=norm, lrn=lrn, **act),  # 12x12
            L.pool(pool),  # 5x5 (6x6)
            *L.conv_block(256, 384, 3, padding=1, **act),
            *L.conv_block(384, 384, 3, padding=1, groups=groups, **act),
            *L.conv_block(384, 256, 3, padding=1, groups=groups, **act),
            L.pool(pool),  # 2x2 (3x3)
        )
        side = 2 if pool == "overlapping" else 3
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * side * side, 2048),
            L.activation(activation),
            nn.Dropout(dropout),
            nn.Linear(2048, 2048),
            L.activation(activation),
            nn.Dropout(dropout),
            nn.Linear(2048, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ConvNetCIFAR(nn.Module):
    """A small, fast net in the style of cuda-convnet's CIFAR-10 configs (the paper's four-layer CIFAR net).

    conv 32@5x5 -> max-pool -> act -> norm -> conv 32@5x5 -> act -> avg-pool -> norm -> conv 64@5x5 -> act
    -> avg-pool -> fc. Pools round up as cuda-convnet does, so 32 -> 16 -> 8 -> 4 for either pool kind.
    The default LRN is cuda-convnet's 11 % net (cmrnorm size 9, scale 1e-3 = paper-form alpha 1e-3/9, k 1).
    """

    def __init__(
        self,
        num_classes: int = 10,
        norm: L.Norm = "lrn",
        pool: L.Pool = "overlapping",
        activation: L.Activation = "relu",
        dropout: float = 0.0,
        lrn: dict | None = None,
    ) -> None:
        super().__init__()
        if norm not in ("lrn", "batchnorm", "none"):
            raise ValueError(f"unknown norm {norm!r}: use lrn, batchnorm or none")

        def normalise(ch: int) -> nn.Module:
            if norm == "lrn":
                return L.LRN(**(lrn or {}))
            return nn.BatchNorm2d(ch) if norm == "batchnorm" else nn.Identity()

        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2),
            L.pool(pool, "max", ceil_mode=True),
            L.activation(activation),
            normalise(32),
            nn.Conv2d(32, 32, 5, padding=2),
            L.activation(activation),
            L.pool(pool, "avg", ceil_mode=True),
            normalise(32),
            nn.Conv2d(32, 64, 5, padding=2),
            L.activation(activation),
            L.pool(pool, "avg", ceil_mode=True),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 4 * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
