"""Networks: shapes, parameter counts, the ablation switches and the paper's initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet_lab.models import LRN, AlexNet, AlexNetCIFAR, CudaConvnet18pct, CudaConvnetLocal


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
    for cls in (AlexNet, AlexNetCIFAR):
        net = cls(**kwargs)
        types = {type(m) for m in net.modules()}
        assert all(p in types for p in present), (cls, kwargs)
        assert not any(a in types for a in absent), (cls, kwargs)
        if "pool" in kwargs:
            sizes = {m.kernel_size for m in net.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))}
            assert sizes == {2}


def test_dropout_switch() -> None:
    for cls, default in ((AlexNet, 0.5), (AlexNetCIFAR, 0.5)):
        assert {m.p for m in cls().modules() if isinstance(m, nn.Dropout)} == {default}
        assert {m.p for m in cls(dropout=0.3).modules() if isinstance(m, nn.Dropout)} == {0.3}


@pytest.mark.parametrize("pool", ["overlapping", "non_overlapping"])
def test_cifar_networks_take_32x32(pool: str) -> None:
    x = torch.randn(3, 3, 32, 32)
    tut = AlexNetCIFAR(pool=pool).eval()
    assert tut(x).shape == (3, 10)


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
        AlexNetCIFAR(pool="big")
    with pytest.raises(ValueError, match="unknown norm 'lrn' for the 18pct net"):
        CudaConvnet18pct(norm="lrn")
    with pytest.raises(ValueError, match="wc gives no weight decay for"):
        CudaConvnet18pct(wc={"conv1": 0.004})
    with pytest.raises(ValueError, match="unknown activation"):
        AlexNetCIFAR(activation="gelu")


def test_cuda_convnet_18pct_is_its_config_layer_for_layer() -> None:
    net = CudaConvnet18pct()
    kinds = [(name, type(m).__name__) for name, m in net.features.named_children()]
    assert kinds == [
        ("conv1", "Conv2d"), ("pool1", "MaxPool2d"), ("act1", "ReLU"), ("rnorm1", "SpatialResponseNorm"),
        ("conv2", "Conv2d"), ("act2", "ReLU"), ("pool2", "AvgPool2d"), ("rnorm2", "SpatialResponseNorm"),
        ("conv3", "Conv2d"), ("act3", "ReLU"), ("pool3", "AvgPool2d"),
    ]  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    assert net.features[:2](x).shape == (2, 32, 16, 16)  # pools round up as cuda-convnet's do: 32 -> 16 -> 8 -> 4
    assert net.features(x).shape == (2, 64, 4, 4) and net(x).shape == (2, 10)
    # conv 3*32*25+32, 32*32*25+32, 32*64*25+64; fc10 64*4*4*10+10
    assert n_params(net) == 2432 + 25632 + 51264 + 10250 == 89_578
    rnorm = net.features.rnorm1
    assert (rnorm.size, rnorm.alpha, rnorm.beta, rnorm.k) == (3, pytest.approx(5e-5 / 9), 0.75, 1.0)  # scale / size^2
    assert not any(
        isinstance(m, nn.Module) and "Norm" in type(m).__name__ for m in CudaConvnet18pct(norm="none").modules()
    )


def test_the_pooling_contrast_changes_only_the_pools() -> None:
    """pooling_ablation's pair: 3x3 stride-2 pools against 2x2 stride-2 pools in the 18pct net, with the same maps
    (16/8/4, cuda-convnet's rounding up), the same parameters, and an LRN that is still there."""
    over, plain = CudaConvnet18pct(), CudaConvnet18pct(pool="non_overlapping")
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(over.features, plain.features):
        x_a, x_b = a(x), b(x)
        assert x_a.shape == x_b.shape
        x = x_a
    sizes = [(m.kernel_size, m.stride) for m in plain.features if "Pool" in type(m).__name__]
    assert sizes == [(2, 2)] * 3 and [m.kernel_size for m in over.features if "Pool" in type(m).__name__] == [3] * 3
    assert n_params(over) == n_params(plain) == 89_578
    assert [type(m).__name__ for m in plain.features] == [type(m).__name__ for m in over.features]
    differs = [
        n
        for (n, a), (_, b) in zip(over.features.named_children(), plain.features.named_children())
        if repr(a) != repr(b)
    ]
    assert differs == ["pool1", "pool2", "pool3"]


def test_cuda_convnet_initialisation_and_per_layer_groups() -> None:
    torch.manual_seed(0)
    net = CudaConvnet18pct()
    assert net.features.conv1.weight.std().item() == pytest.approx(1e-4, rel=0.1)  # initW 1e-4
    assert net.features.conv3.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert all(m.bias.abs().max() == 0 for m in (net.features.conv1, net.features.conv2, net.classifier.fc10))
    groups = {g.name: (g.lr_scale, g.weight_decay, sum(p.numel() for p in g.params)) for g in net.param_groups()}
    assert groups["fc10.weight"] == (1.0, 1.0, 10_240) and groups["conv2.weight"] == (1.0, 0.004, 25_600)
    assert groups["conv1.bias"] == (2.0, 0.0, 32)  # epsB = 2 epsW, biases without decay
    assert sum(v[2] for v in groups.values()) == 89_578


def test_conv_local_nets_by_hand_count() -> None:
    eleven, thirteen = CudaConvnetLocal(), CudaConvnetLocal(norm="none", local3_filters=32)
    x = torch.randn(2, 3, 24, 24)
    assert eleven.features[:3](x).shape == (2, 64, 12, 12) and eleven.features(x).shape == (2, 32, 6, 6)
    # conv1 3*64*25+64, conv2 64*64*25+64; local3 36 positions x (64*9 -> 64) + 64*36 biases; local4 36 x (64*9 -> 32)
    # + 32*36; fc10 32*36*10+10
    local3, local4 = 36 * 64 * 576 + 64 * 36, 36 * 32 * 576 + 32 * 36
    assert n_params(eleven) == 4864 + 102_464 + local3 + local4 + 11_530 == 2_112_970
    assert n_params(thirteen) == 4864 + 102_464 + (36 * 32 * 576 + 32 * 36) + (36 * 32 * 288 + 32 * 36) + 11_530
    cmrnorm = eleven.features.rnorm1
    assert (cmrnorm.size, cmrnorm.alpha, cmrnorm.k) == (9, pytest.approx(1e-3 / 9), 1.0)  # scale / size, k = 1


def test_one_gpu_comparison_net_by_hand_count() -> None:
    # conv1 11*11*3*48+48, conv2 5*5*48*128+128, conv3 3*3*128*192+192, conv4 3*3*192*192+192, conv5 3*3*192*256+256,
    # fc6 256*36*4096+4096, fc7 4096*4096+4096, fc8 4096*1000+1000: half the kernels but conv5's
    convs = 17_472 + 153_728 + 221_376 + 331_968 + 442_624
    fcs = 37_752_832 + 16_781_312 + 4_097_000
    assert n_params(AlexNet(num_classes=1000, groups=1, widths=[48, 128, 192, 192, 256])) == convs + fcs == 59_798_312


def test_lrn_stays_within_its_tower_through_conv2() -> None:
    """With two towers nothing crosses between them before conv3: change tower A's conv1 maps and tower B's
    outputs of LRN1, conv2 and LRN2 stay as they were (each GPU normalised only its own maps)."""
    torch.manual_seed(0)
    net = AlexNet(num_classes=10, groups=2).eval()
    conv1_out = torch.relu(torch.randn(2, 96, 55, 55) * 30)  # large enough for LRN to divide
    upto_lrn2 = net.features[2:7]  # LRN1, pool, conv2, ReLU, LRN2
    assert [type(m).__name__ for m in upto_lrn2] == ["LRN", "MaxPool2d", "Conv2d", "ReLU", "LRN"]
    changed = conv1_out.clone()
    changed[:, :48] *= 3.0  # tower A
    for depth in (1, 5):  # after LRN1, after LRN2
        before, after = upto_lrn2[:depth](conv1_out), upto_lrn2[:depth](changed)
        half = before.shape[1] // 2
        torch.testing.assert_close(after[:, half:], before[:, half:])  # tower B untouched
        assert not torch.allclose(after[:, :half], before[:, :half])  # tower A did change
    # one tower: the same change reaches all of LRN1's maps near the boundary
    one = LRN(5, 1e-4, 0.75, 2.0)
    assert not torch.allclose(one(changed)[:, 48:50], one(conv1_out)[:, 48:50])


def test_per_layer_settings_reach_the_optimizer_as_cuda_convnet_updates() -> None:
    """One SGD step from a zero velocity is w -= epsW * (mean gradient + wc * w) for weights, b -= epsB * gradient
    for biases: cuda-convnet's update with the 18pct config's per-layer values."""
    from functools import partial

    import torch.nn.functional as F

    from alexnet_lab.module import Classifier

    torch.manual_seed(0)
    net = CudaConvnet18pct()
    module = Classifier(net, partial(torch.optim.SGD, lr=0.001, momentum=0.9, weight_decay=5e-4))
    optimizer = module.configure_optimizers()
    settings = {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
    assert settings["fc10.weight"] == (0.001, 1.0) and settings["conv3.weight"] == (0.001, 0.004)
    assert settings["conv1.bias"] == (0.002, 0.0)  # the optimizer's own weight_decay (5e-4) is not used
    x, y = torch.randn(8, 3, 32, 32) * 60, torch.randint(0, 10, (8,))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    F.cross_entropy(net(x), y).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    optimizer.step()
    fc10, bias = "classifier.fc10.weight", "features.conv1.bias"
    torch.testing.assert_close(net.state_dict()[fc10], before[fc10] - 0.001 * (grads[fc10] + 1.0 * before[fc10]))
    torch.testing.assert_close(net.state_dict()[bias], before[bias] - 0.002 * grads[bias])
