"""``alexnet-predict ckpt_path=...``: what a trained network sees, the paper's Figure 4 for any checkpoint (a Hydra app).

Writes into its run dir ``predictions.png`` (test images with their top-5 labels as probability bars, the true label
highlighted), ``neighbours.png`` (test images, each followed by the training images nearest to it in the last
hidden layer), ``predictions.csv`` (the top-5 of every test image), ``confusion.png`` (over the test split), and
the same images to TensorBoard. The network and data settings come from the checkpoint; every image is shown to
the network as one centre view.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torchmetrics.classification import MulticlassConfusionMatrix

from alexnet_lab import cli
from alexnet_lab.errors import ConfigError, build_node, run_guarded
from alexnet_lab.eval import restore
from alexnet_lab.files import pictures_to_tensorboard, write_json
from alexnet_lab.neighbours import nearest, penultimate

log = logging.getLogger(__name__)

# the config's resolvers, here and not in cli: a multirun's worker processes (joblib launcher) import this entry
# point to unpickle the task and resolve their run dirs before it runs
cli.register_resolvers()


def spread(n: int, count: int) -> torch.Tensor:
    """``count`` indices spread evenly over ``range(n)`` (deterministic, so two runs show the same images)."""
    return torch.linspace(0, n - 1, min(count, n)).round().long().unique()


def pick_indices(cfg: DictConfig, n: int, count: int) -> torch.Tensor:
    """``predict.indices`` when given (each checked against the split), else ``count`` spread over it."""
    given = cfg.predict.get("indices")
    if given is None:
        return spread(n, count)
    bad = [i for i in given if not isinstance(i, int) or not 0 <= i < n]
    if bad:
        raise ConfigError(
            f"predict.indices holds {bad[0]!r}, outside the test split's 0..{n - 1}; pick from that range"
        )
    return torch.tensor(list(given), dtype=torch.int64)


def to_picture(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


def predictions_figure(images: torch.Tensor, truth: list[int], top5: tuple[torch.Tensor, torch.Tensor],
                       names: list[str], path: Path) -> tuple[int, int]:  # fmt: skip
    """The paper's Figure 4 (left): each image over its top-5 probabilities, the true label's bar in red."""
    from matplotlib.figure import Figure

    n, cols = len(images), min(4, len(images))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.4 * cols, 3.6 * rows), dpi=100)
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[1.4, 1.0] * rows, hspace=0.35, wspace=0.5)
    probs, labels = top5
    for i in range(n):
        r, c = divmod(i, cols)
        picture, bars = fig.add_subplot(grid[2 * r, c]), fig.add_subplot(grid[2 * r + 1, c])
        picture.imshow(to_picture(images[i]), interpolation="nearest")
        picture.set_title(names[truth[i]], fontsize=9)
        picture.axis("off")
        shown = labels[i].tolist()
        colours = ["tab:red" if label == truth[i] else "tab:blue" for label in shown]
        values = probs[i].tolist()
        bars.barh(range(len(shown))[::-1], values, color=colours)
        for y, value in zip(range(len(shown))[::-1], values):  # the probability, readable without the axis
            bars.text(min(value, 0.72) + 0.02, y, f"{value:.0%}" if value >= 0.01 else "<1%", va="center", fontsize=8)
        bars.set_yticks(range(len(shown))[::-1], [names[label][:18] for label in shown], fontsize=8)
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
    fig.savefig(path)
    return fig.canvas.get_width_height()


def neighbours_figure(queries: torch.Tensor, found: torch.Tensor, names: list[str], query_labels: list[int],
                      found_labels: list[list[int]], path: Path) -> tuple[int, int]:  # fmt: skip
    """The paper's Figure 4 (right): each query (first column, framed) and its nearest training images."""
    from matplotlib.figure import Figure

    m, k = found.shape[:2]
    fig = Figure(figsize=(1.3 * (k + 1), 1.4 * m), dpi=100)
    axes = fig.subplots(m, k + 1, squeeze=False)
    for row in range(m):
        axes[row][0].imshow(to_picture(queries[row]), interpolation="nearest")
        axes[row][0].set_title(f"test: {names[query_labels[row]][:12]}", fontsize=7, color="tab:red")
        for col in range(k):
            axes[row][col + 1].imshow(to_picture(found[row, col]), interpolation="nearest")
            axes[row][col + 1].set_title(names[found_labels[row][col]][:12], fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.1, hspace=0.4)
    fig.savefig(path)
    return fig.canvas.get_width_height()


def confusion_figure(matrix: torch.Tensor, names: list[str], path: Path) -> None:
    """Rows: true class, columns: predicted, counts over the test split (torchmetrics computes them)."""
    from matplotlib.figure import Figure

    n = len(names)
    fig = Figure(figsize=(min(14.0, 2.5 + 0.75 * n), min(13.0, 2.0 + 0.7 * n)), dpi=100)
    ax = fig.subplots()
    counts = matrix.numpy()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, label="test images")
    if n <= 30:
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=9)
        ax.set_yticks(range(n), names, fontsize=9)
        dark = counts.max() / 2  # white text on the darker half of the colour scale, black on the lighter
        for (i, j), value in np.ndenumerate(counts):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=9 if n <= 12 else 7,
                        color="white" if value > dark else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path)


def predict(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    cli.check_override_types(cfg)
    log.info("run dir: %s", run_dir)
    options = cfg.predict
    if options.distance not in ("euclidean", "cosine"):
        raise ConfigError(f"predict.distance={options.distance!r}: use euclidean or cosine")
    ckpt_path, _, module, _, data_cfg = restore(cfg)
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={cfg.device!r}: use auto, cpu or cuda")
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    net = module.net.to(device).eval()
    datamodule = build_node(OmegaConf.create({"data": data_cfg}), "data")
    datamodule.prepare_data()
    datamodule.setup("test")
    test, train = datamodule.test_split, "train"
    names = datamodule.class_names()
    start = time.perf_counter()

    # the whole test split: top-5 per image into the CSV, and the confusion matrix
    confusion = MulticlassConfusionMatrix(len(names)).to(device)
    rows, top5_all = [], []
    with torch.no_grad():
        for x, y in datamodule.unaugmented_batches(test, device):
            probs = net(x).float().softmax(dim=-1)
            top = probs.topk(min(5, probs.shape[1]), dim=-1)
            top5_all.append((top.values.cpu(), top.indices.cpu()))
            confusion.update(probs, y)
            rows += y.tolist()
    values = torch.cat([t[0] for t in top5_all])
    labels = torch.cat([t[1] for t in top5_all])
    with open(run_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        k = labels.shape[1]
        writer.writerow(["index", "true", *[c for i in range(1, k + 1) for c in (f"top{i}", f"p{i}")]])
        for index, (truth, p, lab) in enumerate(zip(rows, values.tolist(), labels.tolist(), strict=True)):
            writer.writerow([index, names[truth], *[c for j in range(k) for c in (names[lab[j]], f"{p[j]:.6f}")]])
    confusion_figure(confusion.compute().cpu(), names, run_dir / "confusion.png")

    # Figure 4, left
    n_test = datamodule.split_size(test)
    shown = pick_indices(cfg, n_test, options.images)
    predictions_figure(datamodule.images(test, shown), [rows[i] for i in shown.tolist()],
                       (values[shown], labels[shown]), names, run_dir / "predictions.png")  # fmt: skip

    # Figure 4, right: nearest training images by the last hidden layer, streamed over the training split
    queries = shown[: options.queries] if cfg.predict.get("indices") is not None else spread(n_test, options.queries)
    query_features = torch.cat(list(penultimate(net, datamodule.unaugmented_batches(test, device, queries))))
    n_train = datamodule.split_size(train)
    subset = None if options.max_train is None else spread(n_train, options.max_train)
    keys = penultimate(net, datamodule.unaugmented_batches(train, device, subset))
    found = nearest(query_features, keys, options.neighbours, options.distance)
    found_indices = found.indices if subset is None else subset[found.indices]
    train_labels = datamodule.labels(train, found_indices.flatten()).view_as(found_indices)
    pictures = datamodule.images(train, found_indices.flatten())
    neighbours_figure(datamodule.images(test, queries), pictures.view(*found_indices.shape, *pictures.shape[1:]),
                      names, [rows[i] for i in queries.tolist()], train_labels.tolist(), run_dir / "neighbours.png")  # fmt: skip
    seconds = round(time.perf_counter() - start, 2)

    pictures_to_tensorboard(
        run_dir, {f"predict/{n}": run_dir / f"{n}.png" for n in ("predictions", "neighbours", "confusion")}
    )
    record = {
        "status": "finished",
        "ckpt_path": str(ckpt_path),
        "run_dir": str(run_dir),
        "overrides": list(HydraConfig.get().overrides.task),
        "seconds": seconds,
        "test_images": n_test,
        "top1_err": round(100.0 * (labels[:, 0] != torch.tensor(rows)).float().mean().item(), 4),
        "shown": shown.tolist(),
        "queries": queries.tolist(),
        "neighbours": found_indices.tolist(),
        "distances": found.distances.tolist(),
        "distance": options.distance,
        "train_images_searched": n_train if subset is None else len(subset),
    }
    write_json(run_dir / "metrics.json", record)
    log.info("wrote predictions.png, neighbours.png, predictions.csv, confusion.png into %s (%.1f s)", run_dir, seconds)
    return record


@hydra.main(version_base="1.3", config_path="pkg://alexnet_lab.conf", config_name="predict")
def hydra_main(cfg: DictConfig) -> None:
    cli.quiet_upstream()  # here too: a joblib launcher's worker processes run this function, not main()
    run_guarded(predict, cfg)


def main() -> None:
    cli.prepare_command_line()
    hydra_main()


if __name__ == "__main__":
    main()
