"""The 2012 paper's ImageNet network, with a switch for everything the paper ablates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from alexnet_lab.models import layers


class AlexNet(nn.Module):
    """AlexNet (Krizhevsky et al., 2012): five convolutions and three fully connected layers.

    ``groups=2`` reproduces the two-GPU connectivity: conv2, conv4 and conv5 see only the channels of their
    own tower, conv3 and the fully connected layers see both, and each LRN normalises within its tower (each GPU
    normalised its own maps). ``widths`` sets the five convolutions' kernel counts; the paper's one-GPU
    comparison net (Sec. 3.2 and its footnote) is ``groups=1, widths=[48, 128, 192, 192, 256]``: half the kernels
    in each convolutional layer but the last, whose width feeds fc6. A 224x224 input with ``conv1_padding=2``
    (or 227x227 with 0) gives 55x55x96 after conv1 and 6x6x256 before fc6.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        norm: layers.Norm = "lrn",
        pool: layers.Pool = "overlapping",
        activation: layers.Activation = "relu",
        dropout: float = 0.5,
        groups: int = 2,
        widths: Sequence[int] = (96, 256, 384, 384, 256),
        conv1_padding: int = 2,
        lrn: dict | None = None,
        init: str = "default",
    ) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"widths must give the 5 convolutions' kernel counts, got {list(widths)}")
        w1, w2, w3, w4, w5 = widths
        act = {"act": activation}
        norm_args = {"norm": norm, "lrn": lrn, "lrn_groups": groups}
        self.features = nn.Sequential(
            *layers.conv_block(3, w1, 11, stride=4, padding=conv1_padding, **norm_args, **act),
            layers.pool(pool),
            *layers.conv_block(w1, w2, 5, padding=2, groups=groups, **norm_args, **act),
            layers.pool(pool),
            *layers.conv_block(w2, w3, 3, padding=1, **act),
            *layers.conv_block(w3, w4, 3, padding=1, groups=groups, **act),
            *layers.conv_block(w4, w5, 3, padding=1, groups=groups, **act),
            layers.pool(pool),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(w5 * 6 * 6, 4096),
            layers.activation(activation),
            layers.dropout(dropout),
            nn.Linear(4096, 4096),
            layers.activation(activation),
            layers.dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        if init == "paper":
            paper_init(self)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}: use default or paper")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def paper_init(net: AlexNet) -> None:
    """Weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6 and fc7 (the ReLUs start positive), else 0."""
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in net.classifier if isinstance(m, nn.Linear)]
    ones = {convs[1], convs[3], convs[4], fcs[0], fcs[1]}
    for layer in convs + fcs:
        nn.init.normal_(layer.weight, 0.0, 0.01)
        if layer.bias is not None:
            nn.init.constant_(layer.bias, 1.0 if layer in ones else 0.0)
