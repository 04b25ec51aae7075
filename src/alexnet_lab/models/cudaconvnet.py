"""Krizhevsky's cuda-convnet CIFAR-10 networks, layer for layer from its example configs (the paper's CIFAR-10 nets).

Conventions carried over from cuda-convnet (``layer.py``, ``layer.cu``, ``weights.cu``, ``conv_util.cu``), the same
for every network here:

- Inputs: raw 0-255 pixels minus the per-pixel mean image of the training set, nothing scaled (its
  ``CIFARDataProvider``); ``data.mean=pixel data.std=1/255`` gives exactly that, and the experiments set it.
  Every normalisation constant below was tuned for inputs of that size.
- Response normalisation: ``1 + scale' * sum(a^2)`` raised to ``pow``, k fixed at 1, where cuda-convnet divides the
  configured ``scale`` by the window: by ``size^2`` for the same-map ``rnorm``, by ``size`` for the cross-map
  ``cmrnorm``. The configs here take cuda-convnet's own ``scale`` and ``pow`` and do that division.
- Initialisation: weights ~ N(0, initW^2) per layer, biases 0.
- Optimizer: the gradient of a layer is the batch sum of per-image gradients times ``eps / batch``, i.e. the
  mean, and the update is ``inc = mom * inc - epsW * (mean gradient + wc * w); w += inc``: torch's SGD on the mean
  cross-entropy with ``lr = epsW``, ``momentum = momW`` and ``weight_decay = wc``, per layer (identical while the
  learning rate is constant; when it drops, cuda-convnet's velocity keeps the old rate's steps, torch's does not).
  Biases learn at ``epsB`` (``bias_lr_scale = epsB / epsW = 2``) with no weight decay. ``param_groups()`` hands
  these per-layer settings to the optimizer; ``optimizer.lr`` is epsW.
- ``dropout`` (before fc10) is not in the originals (0 by default): a switch for the dropout ablation.
- Pooling: outputs round up (``outputsX = ceil((size - 3) / 2) + 1``), and an average over a window cut by the
  border divides by the pixels inside it: torch's ``ceil_mode=True`` does both.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from alexnet_lab.models import layers


def _cuda_convnet_init(net: nn.Module, init_w: Mapping[str, float]) -> None:
    """Weights ~ N(0, initW^2) for each named layer, biases 0 (cuda-convnet's ``make_weights``)."""
    found = {name: module for name, module in net.named_modules() if name.rsplit(".", 1)[-1] in init_w}
    missing = set(init_w) - {name.rsplit(".", 1)[-1] for name in found}
    if missing:
        raise ValueError(f"init_w names layers this network lacks: {sorted(missing)}")
    for name, module in found.items():
        nn.init.normal_(module.weight, 0.0, float(init_w[name.rsplit(".", 1)[-1]]))
        nn.init.zeros_(module.bias)


def _param_groups(net: nn.Module, wc: Mapping[str, float], bias_lr_scale: float) -> list[layers.ParamGroup]:
    """One group per layer's weights (its own weight decay ``wc``) and one per layer's biases (epsB, no decay)."""
    groups: list[layers.ParamGroup] = []
    for name, module in net.named_modules():
        short = name.rsplit(".", 1)[-1]
        if short not in wc:
            continue
        groups.append(layers.ParamGroup(f"{short}.weight", [module.weight], 1.0, float(wc[short])))
        groups.append(layers.ParamGroup(f"{short}.bias", [module.bias], bias_lr_scale, 0.0))
    listed = {id(p) for g in groups for p in g.params}
    unlisted = [n for n, p in net.named_parameters() if id(p) not in listed]
    if unlisted:
        raise ValueError(f"wc gives no weight decay for {unlisted}; name every layer with weights")
    return groups


class CudaConvnet18pct(nn.Module):
    """``layers-18pct.cfg`` ("18 % error on CIFAR-10 in 20 minutes"), and with ``norm="none"`` and fc10 ``wc`` 3 its
    sibling without normalisation ``layers-19pct.cfg`` (19 %): the cleanest LRN-only pair in Krizhevsky's code.

    conv1 32@5x5 pad 2 -> max-pool 3/2 -> ReLU -> rnorm1 -> conv2 32@5x5 pad 2 -> ReLU -> avg-pool 3/2 -> rnorm2
    -> conv3 64@5x5 pad 2 -> ReLU -> avg-pool 3/2 -> fc10, on 32x32 inputs (32 -> 16 -> 8 -> 4); 89,578 parameters.
    cuda-convnet applies conv1's ReLU at pool1, after the max: the same function. rnorm is same-map (spatial),
    size 3, scale 5e-5 (alpha 5e-5 / 9), pow 0.75, k 1. Recipe (``layer-params-18pct.cfg``): epsW 0.001, epsB
    0.002, momentum 0.9, wc 0.004 on the convolutions and 1 on fc10 (3 in 19pct); initW 1e-4 for conv1, 0.01
    elsewhere; batch 128; no augmentation; lr / 10 after 120 epochs and again after 10 more.

    ``pool="non_overlapping"`` makes the three 3x3 stride-2 pools 2x2 stride 2: with cuda-convnet's rounding up both
    give 16/8/4 maps, so the two nets have equal shapes and parameter counts (the paper's s = z = 2 contrast).
    With cuda-convnet's inputs rnorm's divisor starts at 1 (conv1's initW of 1e-4 makes conv1's outputs tiny) and
    grows as conv1 learns (``tests/test_real_data.py`` checks that it acts after one epoch).
    """

    def __init__(
        self,
        num_classes: int = 10,
        norm: str = "rnorm",
        activation: layers.Activation = "relu",
        rnorm: Mapping[str, float] | None = None,
        init_w: Mapping[str, float] | None = None,
        wc: Mapping[str, float] | None = None,
        bias_lr_scale: float = 2.0,
        dropout: float = 0.0,
        pool: layers.Pool = "overlapping",
    ) -> None:
        super().__init__()
        if norm not in ("rnorm", "none"):
            raise ValueError(f"unknown norm {norm!r} for the 18pct net: use rnorm (18pct) or none (19pct)")
        rnorm = {"size": 3, "scale": 5e-5, "pow": 0.75, **(rnorm or {})}

        def normalise() -> nn.Module:
            if norm == "none":
                return nn.Identity()
            size = int(rnorm["size"])
            return layers.SpatialResponseNorm(size, alpha=rnorm["scale"] / size**2, beta=rnorm["pow"], k=1.0)

        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, 32, 5, padding=2),
                pool1=layers.pool(pool, "max", ceil_mode=True),  # 16x16
                act1=layers.activation(activation),
                rnorm1=normalise(),
                conv2=nn.Conv2d(32, 32, 5, padding=2),
                act2=layers.activation(activation),
                pool2=layers.pool(pool, "avg", ceil_mode=True),  # 8x8
                rnorm2=normalise(),
                conv3=nn.Conv2d(32, 64, 5, padding=2),
                act3=layers.activation(activation),
                pool3=layers.pool(pool, "avg", ceil_mode=True),  # 4x4
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(flatten=nn.Flatten(), dropout=layers.dropout(dropout), fc10=nn.Linear(64 * 4 * 4, num_classes))
        )
        _cuda_convnet_init(self, init_w or {"conv1": 1e-4, "conv2": 0.01, "conv3": 0.01, "fc10": 0.01})
        self.wc = dict(wc or {"conv1": 0.004, "conv2": 0.004, "conv3": 0.004, "fc10": 1.0})
        self.bias_lr_scale = bias_lr_scale
        _param_groups(self, self.wc, bias_lr_scale)  # every weight has its decay: fail now, not in the optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def param_groups(self) -> list[layers.ParamGroup]:
        return _param_groups(self, self.wc, self.bias_lr_scale)


class CudaConvnetLocal(nn.Module):
    """``layers-conv-local-11pct.cfg`` (11 %), and with ``norm="none"``, ``local3_filters=32`` and fc10 ``wc`` 0.004
    ``layers-conv-local-13pct.cfg`` (13 %): the nets behind the paper's "13 % without normalisation, 11 % with".

    conv1 64@5x5 pad 2 -> ReLU -> max-pool 3/2 -> cmrnorm1 -> conv2 64@5x5 pad 2 -> ReLU -> cmrnorm2 -> max-pool 3/2
    -> local3 64@3x3 pad 1 -> ReLU -> local4 32@3x3 pad 1 -> ReLU -> fc10, on 24x24 crops (24 -> 12 -> 6); the local
    layers have a filter (and bias) per position. cmrnorm is cross-map, size 9, scale 0.001 (alpha 0.001 / 9), pow
    0.75, k 1. Recipe: epsW 0.001, epsB 0.002, momentum 0.9, wc 0 on the convolutions, 0.004 on the local layers,
    0.01 on fc10 (0.004 in 13pct); initW 1e-4 conv1, 0.01 conv2 and fc10, 0.04 local; random 24x24 crops and flips;
    test on 10 views (4 corners and centre, each mirrored). The 11 % and 13 % nets also differ in local3's width and
    fc10's decay and trained about 3x longer: not a clean LRN ablation.

    Whether cmrnorm acts in this recipe (its divisor after 100 training steps) is measured by
    ``tests/test_real_data.py``; the figures are in that test.
    """

    def __init__(
        self,
        num_classes: int = 10,
        norm: str = "cmrnorm",
        activation: layers.Activation = "relu",
        local3_filters: int = 64,
        image_size: int = 24,
        cmrnorm: Mapping[str, float] | None = None,
        init_w: Mapping[str, float] | None = None,
        wc: Mapping[str, float] | None = None,
        bias_lr_scale: float = 2.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if norm not in ("cmrnorm", "none"):
            raise ValueError(f"unknown norm {norm!r} for the conv-local net: use cmrnorm (11pct) or none (13pct)")
        cmrnorm = {"size": 9, "scale": 1e-3, "pow": 0.75, **(cmrnorm or {})}

        def normalise() -> nn.Module:
            if norm == "none":
                return nn.Identity()
            size = int(cmrnorm["size"])
            return layers.LRN(size, alpha=cmrnorm["scale"] / size, beta=cmrnorm["pow"], k=1.0)

        side = [image_size]
        for _ in range(2):  # two 3/2 pools rounding up
            side.append(-(-(side[-1] - 3) // 2) + 1)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, 64, 5, padding=2),
                act1=layers.activation(activation),
                pool1=nn.MaxPool2d(3, stride=2, ceil_mode=True),
                rnorm1=normalise(),
                conv2=nn.Conv2d(64, 64, 5, padding=2),
                act2=layers.activation(activation),
                rnorm2=normalise(),
                pool2=nn.MaxPool2d(3, stride=2, ceil_mode=True),
                local3=layers.LocallyConnected2d(64, local3_filters, side[2], 3, padding=1),
                act3=layers.activation(activation),
                local4=layers.LocallyConnected2d(local3_filters, 32, side[2], 3, padding=1),
                act4=layers.activation(activation),
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(), dropout=layers.dropout(dropout), fc10=nn.Linear(32 * side[2] ** 2, num_classes)
            )
        )
        default_init = {"conv1": 1e-4, "conv2": 0.01, "local3": 0.04, "local4": 0.04, "fc10": 0.01}
        _cuda_convnet_init(self, init_w or default_init)
        self.wc = dict(wc or {"conv1": 0.0, "conv2": 0.0, "local3": 0.004, "local4": 0.004, "fc10": 0.01})
        self.bias_lr_scale = bias_lr_scale
        _param_groups(self, self.wc, bias_lr_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def param_groups(self) -> list[layers.ParamGroup]:
        return _param_groups(self, self.wc, self.bias_lr_scale)
