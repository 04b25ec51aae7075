"""LRN against the paper's equation, computed here independently with plain loops."""

from __future__ import annotations

import pytest
import torch

from alexnet_lab.models import LRN, LocallyConnected2d, SpatialResponseNorm


def paper_lrn(a: torch.Tensor, n: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """b^i = a^i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j)^2)^beta, channel by channel."""
    channels = a.shape[1]
    out = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        s = (a[:, lo : hi + 1] ** 2).sum(dim=1)
        out[:, i] = a[:, i] / (k + alpha * s) ** beta
    return out


@pytest.mark.parametrize("n, alpha, beta, k", [(5, 1e-4, 0.75, 2.0), (9, 1e-3 / 9, 0.75, 1.0), (3, 0.5, 0.5, 1.0)])
def test_lrn_is_the_papers_equation(n: int, alpha: float, beta: float, k: float) -> None:
    torch.manual_seed(0)
    a = torch.randn(2, 12, 5, 5, dtype=torch.float64) * 20  # large activations so the sum matters
    got = LRN(n, alpha, beta, k)(a)
    want = paper_lrn(a, n, alpha, beta, k)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_our_alpha_is_torchs_alpha_times_n() -> None:
    """The translation README documents: torch's LocalResponseNorm divides alpha by n, the paper does not, so the
    paper's alpha = 1e-4 is torch's alpha = 5e-4 (n = 5); the layer must not be torch's with the paper's number."""
    torch.manual_seed(0)
    a = torch.randn(1, 8, 3, 3, dtype=torch.float64) * 50
    ours = LRN(5, 1e-4, 0.75, 2.0)(a)
    torch.testing.assert_close(ours, torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(a), rtol=1e-10, atol=0)
    assert not torch.allclose(ours, torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a), rtol=1e-6)


def spatial_by_loop(a: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """cuda-convnet's rnorm pixel by pixel: the size x size window centred on each pixel, cut at the border."""
    out = torch.empty_like(a)
    _, _, h, w = a.shape
    r = size // 2
    for y in range(h):
        for x in range(w):
            window = a[:, :, max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
            out[:, :, y, x] = a[:, :, y, x] / (k + alpha * (window**2).sum(dim=(2, 3))) ** beta
    return out


@pytest.mark.parametrize("size", [3, 5])
def test_spatial_response_norm_against_a_loop(size: int) -> None:
    torch.manual_seed(0)
    a = torch.randn(2, 4, 7, 6, dtype=torch.float64) * 30
    layer = SpatialResponseNorm(size, alpha=5e-5 / size**2 * 10, beta=0.75, k=1.0)
    torch.testing.assert_close(layer(a), spatial_by_loop(a, size, layer.alpha, 0.75, 1.0), rtol=1e-10, atol=1e-12)
    assert layer.divisor(a).min() >= 1.0  # k^beta = 1: the divisor never goes below it


def test_lrn_groups_is_two_lrns_side_by_side() -> None:
    torch.manual_seed(0)
    a = torch.randn(2, 12, 3, 3, dtype=torch.float64) * 20
    got = LRN(5, 1e-3, 0.75, 2.0, groups=2)(a)
    want = torch.cat([paper_lrn(a[:, :6], 5, 1e-3, 0.75, 2.0), paper_lrn(a[:, 6:], 5, 1e-3, 0.75, 2.0)], dim=1)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer", [LRN, SpatialResponseNorm])
def test_even_window_sizes_are_refused(layer: type) -> None:
    with pytest.raises(ValueError, match="must be odd"):
        layer(4)


def test_locally_connected_layer_against_a_loop() -> None:
    torch.manual_seed(0)
    layer = LocallyConnected2d(3, 4, in_size=5, kernel_size=3, padding=1).double()
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    want = torch.empty(2, 4, 5, 5, dtype=torch.float64)
    for y in range(5):
        for x_ in range(5):
            patch = padded[:, :, y : y + 3, x_ : x_ + 3].reshape(2, -1)  # (c, i, j) order
            weight = layer.weight[y * 5 + x_]  # this position's own (4, 27) filters
            want[:, :, y, x_] = patch @ weight.T + layer.bias[:, y, x_]
    torch.testing.assert_close(layer(x), want, rtol=1e-10, atol=1e-12)
    # unshared: the same patch at two positions gives different outputs
    same = torch.ones(1, 3, 5, 5, dtype=torch.float64)
    out = layer(same)
    assert not torch.allclose(out[0, :, 2, 2], out[0, :, 2, 3])
