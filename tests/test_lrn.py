"""LRN against the paper's equation, computed here independently with plain loops."""

from __future__ import annotations

import pytest
import torch

from alexnet_lab.models import LRN


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


def test_torch_local_response_norm_would_divide_alpha_by_n() -> None:
    torch.manual_seed(0)
    a = torch.randn(1, 8, 3, 3, dtype=torch.float64) * 50
    naive = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a)
    paper = paper_lrn(a, 5, 1e-4, 0.75, 2.0)
    assert not torch.allclose(naive, paper, rtol=1e-6)  # the trap the issue warns about
    torch.testing.assert_close(naive, paper_lrn(a, 5, 1e-4 / 5, 0.75, 2.0), rtol=1e-10, atol=1e-12)
