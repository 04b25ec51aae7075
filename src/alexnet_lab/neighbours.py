"""What a trained network sees: its penultimate-layer features, and the nearest training images by them (the paper's
Figure 4, right), computed in batches with memory bounded by the batch, not by the training set."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn


def penultimate(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[torch.Tensor]:
    """The input of the network's last fully connected layer for each batch (fc7 on the AlexNets, 4096-d; the
    last hidden layer on the others), with the logits discarded; the network must be in eval mode."""
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    handle = last.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().flatten(1)))
    try:
        with torch.no_grad():
            for x, _ in batches:
                net(x)
                yield captured.pop()
    finally:
        handle.remove()


def distances(queries: torch.Tensor, keys: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """(Q, K) distances in float32: Euclidean, as in the paper, or cosine (1 - cosine similarity)."""
    q, k = queries.float(), keys.float()
    if metric == "cosine":
        return 1.0 - nn.functional.normalize(q, dim=1) @ nn.functional.normalize(k, dim=1).T
    if metric == "euclidean":
        return torch.cdist(q, k)
    raise ValueError(f"unknown distance {metric!r}: use euclidean or cosine")


@dataclass
class Nearest:
    """For each query, its ``k`` nearest keys: their indices (in the order the keys came) and distances."""

    indices: torch.Tensor  # (Q, k) int64
    distances: torch.Tensor  # (Q, k) float32


def nearest(queries: torch.Tensor, key_batches: Iterable[torch.Tensor], k: int, metric: str = "euclidean") -> Nearest:
    """The ``k`` nearest of a stream of key batches to each query, keeping only the running best: memory grows
    with the batch and ``k``, not with the number of keys (ImageNet's 1.28 M x 4096 never has to fit)."""
    best_d = torch.full((len(queries), 0), float("inf"))
    best_i = torch.zeros((len(queries), 0), dtype=torch.int64)
    seen = 0
    for keys in key_batches:
        d = distances(queries, keys, metric).cpu()
        idx = torch.arange(seen, seen + len(keys)).expand(len(queries), -1)
        best_d, order = torch.cat([best_d, d], dim=1).sort(dim=1, stable=True)
        best_i = torch.cat([best_i, idx], dim=1).gather(1, order)
        best_d, best_i = best_d[:, :k], best_i[:, :k]
        seen += len(keys)
    if seen < k:
        raise ValueError(f"asked for {k} neighbours among {seen} images")
    return Nearest(best_i, best_d)
