"""The Keras tutorial's AlexNet for 32x32 CIFAR-10 inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from alexnet_lab.models import layers


class AlexNetCIFAR(nn.Module):
    """The Keras tutorial's AlexNet for 32x32 inputs, layer for layer.

    Conv 96@3x3 valid -> BN -> ReLU -> pool; Conv 256@3x3 valid -> BN -> ReLU -> pool; Conv 384, 384, 256
    @3x3 same with ReLU; pool; Dense 2048, Dense 2048 (dropout 0.5 each); Dense 10. ``norm`` swaps the two
    BatchNorms for the paper's LRN (after the ReLU) or removes them; ``groups=2`` splits conv2, conv4 and
    conv5 into two towers as in the paper, and each LRN normalises within its tower. ``widths`` sets the five
    convolutions' kernel counts: ``[48, 128, 192, 192, 256]`` is the paper's one-GPU comparison net (half the
    kernels in each convolutional layer but the last, whose width feeds the fully connected layers).
    """

    def __init__(
        self,
        num_classes: int = 10,
        norm: layers.Norm = "batchnorm",
        pool: layers.Pool = "overlapping",
        activation: layers.Activation = "relu",
        dropout: float = 0.5,
        groups: int = 1,
        widths: Sequence[int] = (96, 256, 384, 384, 256),
        lrn: dict | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"widths must give the 5 convolutions' kernel counts, got {list(widths)}")
        w1, w2, w3, w4, w5 = widths
        act = {"act": activation}
        norm_args = {"norm": norm, "lrn": lrn, "lrn_groups": groups}
        self.features = nn.Sequential(
            *layers.conv_block(3, w1, 3, **norm_args, **act),  # 30x30
            layers.pool(pool),  # 14x14 (15x15 non-overlapping)
            *layers.conv_block(w1, w2, 3, groups=groups, **norm_args, **act),  # 12x12
            layers.pool(pool),  # 5x5 (6x6)
            *layers.conv_block(w2, w3, 3, padding=1, **act),
            *layers.conv_block(w3, w4, 3, padding=1, groups=groups, **act),
            *layers.conv_block(w4, w5, 3, padding=1, groups=groups, **act),
            layers.pool(pool),  # 2x2 (3x3)
        )
        side = 2 if pool == "overlapping" else 3
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(w5 * side * side, 2048),
            layers.activation(activation),
            layers.dropout(dropout),
            nn.Linear(2048, 2048),
            layers.activation(activation),
            layers.dropout(dropout),
            nn.Linear(2048, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
