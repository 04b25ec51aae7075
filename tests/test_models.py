"""Networks: shapes, parameter counts, the ablation switches and the paper's initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet_lab.models import LRN, AlexNet, AlexNetCIFAR, ConvNetCIFAR


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_alexnet_parameter_counts_match_the_paper_configuration() -> None:
    # the two-tower figure equals Caffe's bvlc_alexnet; one tower has more weights in conv2, conv4 and conv5
    assert n_params(AlexNet(num_classes=1000, groups=2)) == 60_965_224
    assert n_params(AlexNet(num_classes=1000, groups=1)) == 62_378_344


@pytest.mark.parametrize("size, padding", [(224, 2), (227, 0)])
def test_alexnet_feature_map_sizes(size: int, padding: int) -> None:
    net = AlexNet(num_classes=1000, conv1_padding=padding).eval()
    x = torch.zeros(2, 3, size, size)
    conv1 = net.features[0](x)
    assert conv1.shape == (2, 96, 55, 55)
    assert net.features(x).shape == (2, 256, 6, 6)
    assert net(x).shape == (2, 1000)


def test_alexnet_groups_split_conv2_conv4_conv5_only() -> None:
    convs = [m for m in AlexNet(groups=2).features if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert convs[1].weight.shape == (256, 48, 5, 5)  # each conv2 kernel sees its own tower's 48 maps
    assert convs[2].weight.shape == (384, 256, 3, 3)  # conv3 sees both towers
    assert convs[4].weight.shape == (256, 192, 3, 3)


def test_alexnet_places_lrn_after_relu_of_conv1_and_conv2() -> None:
    layers = list(AlexNet(norm="lrn").features)
    kinds = [type(m).__name__ for m in layers]
    assert kinds[:4] == ["Conv2d", "ReLU", "LRN", "MaxPool2d"]
    assert kinds[4:8] == ["Conv2d", "ReLU", "LRN", "MaxPool2d"]
    assert kinds.count("LRN") == 2
    lrn = layers[2]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)


@pytest.mark.parametrize(
    "kwargs, present, absent",
    [
        ({"norm": "none"}, [], [LRN, nn.BatchNorm2d]),
        ({"norm": "batchnorm"}, [nn.BatchNorm2d], [LRN]),
        ({"activation": "tanh"}, [nn.Tanh], [nn.ReLU]),
        ({"pool": "non_overlapping"}, [nn.MaxPool2d], []),
    ],
)
def test_switches_change_the_layers(kwargs: dict, present: list, absent: list) -> None:
    for cls in (AlexNet, AlexNetCIFAR, ConvNetCIFAR):
        net = cls(**kwargs)
        types = {type(m) for m in net.modules()}
        assert all(p in types for p in present), (cls, kwargs)
        assert not any(a in types for a in absent), (cls, kwargs)
        if "pool" in kwargs:
            sizes = {m.kernel_size for m in net.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))}
            assert sizes == {2}


def test_dropout_switch() -> None:
    for cls, default in ((AlexNet, 0.5), (AlexNetCIFAR, 0.5), (ConvNetCIFAR, 0.0)):
        assert {m.p for m in cls().modules() if isinstance(m, nn.Dropout)} == {default}
        assert {m.p for m in cls(dropout=0.3).modules() if isinstance(m, nn.Dropout)} == {0.3}


@pytest.mark.parametrize("pool", ["overlapping", "non_overlapping"])
def test_cifar_networks_take_32x32(pool: str) -> None:
    x = torch.randn(3, 3, 32, 32)
    tut = AlexNetCIFAR(pool=pool).eval()
    assert tut(x).shape == (3, 10)
    convnet = ConvNetCIFAR(pool=pool).eval()
    assert convnet.features(x).shape == (3, 64, 4, 4)  # rounds up like cuda-convnet: 32 -> 16 -> 8 -> 4
    assert convnet(x).shape == (3, 10)


def test_alexnet_cifar_is_the_tutorial_network_layer_for_layer() -> None:
    net = AlexNetCIFAR()
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (96, (3, 3), (0, 0)),
        (256, (3, 3), (0, 0)),
        (384, (3, 3), (1, 1)),
        (384, (3, 3), (1, 1)),
        (256, (3, 3), (1, 1)),
    ]
    kinds = [type(m).__name__ for m in net.features][:4]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]  # BN before ReLU, as in the tutorial
    fcs = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(1024, 2048), (2048, 2048), (2048, 10)]
    # Keras Conv2D keeps its bias before BatchNorm: convs 2,688 + 221,440 + 885,120 + 1,327,488 + 884,992,
    # BN scales/shifts 704, dense 2,099,200 + 4,196,352 + 20,490
    assert n_params(net) == 9_638_474


def test_paper_init() -> None:
    torch.manual_seed(0)
    net = AlexNet(init="paper")
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in net.classifier if isinstance(m, nn.Linear)]
    biases = [float(layer.bias.unique().item()) for layer in convs + fcs]
    assert biases == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    for layer in convs + fcs:
        assert abs(layer.weight.mean().item()) < 2e-3
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_bad_switch_values_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown norm"):
        AlexNet(norm="layernorm")
    with pytest.raises(ValueError, match="unknown pool"):
        ConvNetCIFAR(pool="big")
    with pytest.raises(ValueError, match="unknown activation"):
        AlexNetCIFAR(activation="gelu")
