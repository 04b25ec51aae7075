"""Lightning callbacks of our own: the paper's Figure 3 (conv1 filters), how much each LRN layer divides, and the
stop at a training-error milestone (the paper's Figure 1)."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.hooks import RemovableHandle
from torchvision.utils import make_grid

from alexnet_lab.models import ResponseNorm


def conv1_filter_grid(net: nn.Module, nrow: int = 16) -> torch.Tensor:
    """The first convolution's RGB filters as one image, each filter scaled to [0, 1] on its own."""
    conv1 = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    w = conv1.weight.detach().float().cpu()
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    return make_grid(w, nrow=nrow, padding=1, pad_value=1.0)


class Conv1Filters(L.Callback):
    """Adds an image grid of conv1's filters to TensorBoard at the end of every training epoch."""

    def __init__(self, nrow: int = 16) -> None:
        self.nrow = nrow

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        grid = conv1_filter_grid(pl_module.net, self.nrow)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("conv1_filters", grid, global_step=trainer.current_epoch)


def response_norms(net: nn.Module) -> dict[str, ResponseNorm]:
    """The network's response normalisations by name: a named layer keeps its name (``rnorm1``), layers of an
    unnamed ``nn.Sequential`` are ``norm1``, ``norm2``, ... in network order."""
    found = [(name, m) for name, m in net.named_modules() if isinstance(m, ResponseNorm)]
    return {
        (short if not (short := name.rsplit(".", 1)[-1]).isdigit() else f"norm{i}"): module
        for i, (name, module) in enumerate(found, start=1)
    }


class ResponseNormMonitor(L.Callback):
    """Shows whether LRN does anything: the median and 99th percentile of each response normalisation's divisor
    (what it divides its input by; at least k^beta) over the validation images, every epoch, logged as
    ``lrn/<layer>/divisor_median`` and ``lrn/<layer>/divisor_p99`` (TensorBoard and metrics.json).

    A divisor that stays at its floor k^beta for all activations is a constant, not a normalisation. Values come
    from an evenly strided sample of at most ``max_values`` divisors per layer (under DDP, the ranks' quantiles
    are averaged).
    """

    def __init__(self, max_values: int = 2_000_000) -> None:
        self.max_values = max_values
        self.samples: dict[str, list[torch.Tensor]] = {}
        self.handles: list[RemovableHandle] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        per_batch = max(1, self.max_values // max(1, trainer.num_val_batches[0] if trainer.num_val_batches else 1))
        for name, norm in response_norms(pl_module.net).items():
            self.samples[name] = []

            def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: object, name: str = name) -> None:
                divisor = module.divisor(inputs[0].detach()).flatten()
                self.samples[name].append(divisor[:: max(1, divisor.numel() // per_batch)].float())

            self.handles.append(norm.register_forward_hook(record))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for name, parts in self.samples.items():
            if parts:
                values = torch.cat(parts)
                median, p99 = torch.quantile(values, torch.tensor([0.5, 0.99], device=values.device)).tolist()
                pl_module.log(f"lrn/{name}/divisor_median", median, sync_dist=True)
                pl_module.log(f"lrn/{name}/divisor_p99", p99, sync_dist=True)
        self.samples.clear()


class MilestoneStop(L.Callback):
    """The paper's Figure 1 measure: stop training once the training error reaches ``below`` percent, and record
    after how many epochs (``milestone/epochs``, fractional) and seconds (``milestone/seconds``) it did.

    The error is counted over windows of ``window_images`` training images (10,000: one of cuda-convnet's data
    batches, the granularity at which it reported training error), from the errors of the training steps
    themselves, so it costs one host sync per window. A run that never gets there has no ``milestone/*`` values:
    it trained for ``trainer.max_epochs`` without reaching it.
    """

    def __init__(self, below: float = 25.0, window_images: int = 10_000) -> None:
        self.below, self.window_images = below, window_images
        self.wrong: torch.Tensor | None = None  # mistakes in the current window, on the device
        self.images = 0  # images in the current window (this process)
        self.reached = False
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()  # a resumed run counts seconds from its resume
        self.wrong, self.images, self.reached = None, 0, False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        if self.reached or not isinstance(outputs, dict) or "wrong" not in outputs:
            return
        self.wrong = outputs["wrong"] if self.wrong is None else self.wrong + outputs["wrong"]
        self.images += outputs["images"]
        if self.images * trainer.world_size < self.window_images:
            return
        wrong = float(trainer.strategy.reduce(self.wrong.float(), reduce_op="sum"))
        images = float(trainer.strategy.reduce(torch.tensor(float(self.images), device=self.wrong.device), "sum"))
        self.wrong, self.images = None, 0
        if 100.0 * wrong / images <= self.below:
            self.reached = True
            epochs = trainer.current_epoch + (batch_idx + 1) / trainer.num_training_batches
            pl_module.log("milestone/epochs", epochs, on_epoch=True, on_step=False)
            pl_module.log("milestone/seconds", time.perf_counter() - self.start, on_epoch=True, on_step=False)
            trainer.should_stop = True  # after this batch (once trainer.min_epochs are done)
