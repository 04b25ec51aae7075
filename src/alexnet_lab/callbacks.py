"""Lightning callbacks of our own: the paper's Figure 3 (conv1 filters), how much each LRN layer divides, and the
stop at a training-error milestone (the paper's Figure 1)."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
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


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, counting epochs from 1 as the console lines, checkpoint names and TensorBoard
    do ("Epoch 1/3", not "Epoch 0/2"). Lightning 2.6 has no public hook for the description, hence the override."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = f"Epoch {current_epoch + 1}" + (f"/{self.trainer.max_epochs}" if self.trainer.max_epochs else "")
        return f"{text:{len(self.validation_description)}}"


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
    (what it divides its input by; at least k^beta) over the validation images every epoch, logged as
    ``lrn/<layer>/divisor_median`` and ``lrn/<layer>/divisor_p99``, and over the images of a test pass as
    ``test/lrn/<layer>/...`` (so ``alexnet-eval`` measures them for any checkpoint); TensorBoard and metrics.json.

    A divisor that stays at its floor k^beta for all activations is a constant, not a normalisation. Values come
    from a random sample (seeded) of at most ``max_values`` divisors per layer (under DDP, the ranks' quantiles
    are averaged). A compiled net (``compile``) runs eagerly while it is measured: hooks added to a module after
    torch.compile traced it never fire.
    """

    def __init__(self, max_values: int = 2_000_000) -> None:
        self.max_values = max_values
        self.samples: dict[str, list[torch.Tensor]] = {}
        self.handles: list[RemovableHandle] = []
        self.shares: dict[str, float] = {}  # per layer: the fraction of each batch's divisors kept, in this pass

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._start(pl_module, trainer.num_val_batches)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(pl_module, "lrn")  # named before test passes were measured: the report reads these names

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module, trainer.num_test_batches)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(pl_module, "test/lrn")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._release()  # a pass that raised leaves no hooks behind and the compiled net in use

    def _start(self, pl_module: L.LightningModule, batches: list[int | float]) -> None:
        known = batches and math.isfinite(batches[0]) and batches[0] >= 1  # a loader without a length: inf
        budget = max(1, self.max_values // (int(batches[0]) if known else 1))  # values per batch, of the first
        draws = torch.Generator(pl_module.device).manual_seed(0)  # on the device: no host sync per batch
        self.shares.clear()
        norms = response_norms(pl_module.net)
        if norms:
            torch.compiler.set_stance("force_eager")  # back to "default" at the pass's end
        for name, norm in norms.items():
            self.samples[name] = []

            def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: object, name: str = name) -> None:
                divisor = module.divisor(inputs[0].detach()).flatten()
                share = self.shares.setdefault(name, min(1.0, budget / divisor.numel()))  # set by the first batch
                if share < 1.0:  # at random: a fixed stride can fall in step with the maps' columns
                    count = max(1, round(share * divisor.numel()))  # a smaller last batch: fewer
                    divisor = divisor[torch.randint(divisor.numel(), (count,), generator=draws, device=divisor.device)]
                self.samples[name].append(divisor.float())

            self.handles.append(norm.register_forward_hook(record))

    def _release(self) -> None:
        if self.handles:
            torch.compiler.set_stance("default")
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _finish(self, pl_module: L.LightningModule, prefix: str) -> None:
        self._release()
        for name, parts in self.samples.items():
            if parts:
                values = torch.cat(parts)
                median, p99 = torch.quantile(values, torch.tensor([0.5, 0.99], device=values.device)).tolist()
                pl_module.log(f"{prefix}/{name}/divisor_median", median, sync_dist=True)
                pl_module.log(f"{prefix}/{name}/divisor_p99", p99, sync_dist=True)
        self.samples.clear()


class MilestoneStop(L.Callback):
    """The paper's Figure 1 measure: the epoch at which the training error reaches ``below`` percent, recorded as
    ``milestone/epochs`` (fractional), ``milestone/seconds`` and ``milestone/resolution`` (epochs: one batch), and
    training stops soon after.

    The error is the running error over the last ``window_images`` training images (10,000: one of cuda-convnet's
    data batches), taken after every batch from the training steps' own predictions; the oldest batch counts with
    the fraction of it inside the window. The crossing is interpolated inside the batch where the running error
    first drops to ``below``. Per-batch mistakes stay on the device and are read once per ``window_images`` images
    (one host sync per window), so the run stops at most one window after the crossing; the state travels in
    checkpoints, so a resumed run keeps its window. A run that never gets there has no ``milestone/*`` values.
    """

    def __init__(self, below: float = 25.0, window_images: int = 10_000) -> None:
        self.below, self.window_images = below, window_images
        self.pending: list[tuple[torch.Tensor, int, float, float]] = []  # (mistakes, images, epochs after, seconds)
        self.window: list[tuple[float, int]] = []  # (mistakes, images) of the batches behind the running error
        self.previous: tuple[float, float, float] | None = None  # (running error, epochs, seconds) after the last batch
        self.resumed: list[tuple[torch.Tensor, int, float, float]] = []  # pending batches from a checkpoint
        self.reached = False
        self.crossing: list[float] = []  # (epochs, seconds, resolution) once reached: kept in checkpoints
        self.elapsed = 0.0  # training seconds before this (resumed) start
        self.start = 0.0

    def state_dict(self) -> dict[str, object]:
        """Plain values (checkpoints load with weights_only=True); batches not yet read go in as they are (this
        process's own: under DDP a mid-epoch save keeps rank 0's share of them)."""
        return {
            "window": [list(w) for w in self.window],
            "pending": [[float(w), n, e, s] for w, n, e, s in self.pending],
            "previous": self.previous,
            "reached": self.reached,
            "crossing": list(self.crossing),
            "elapsed": self.elapsed + time.perf_counter() - self.start,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window = [(float(w), int(n)) for w, n in state["window"]]
        self.resumed = [(torch.tensor(w), int(n), float(e), float(s)) for w, n, e, s in state.get("pending", [])]
        self.previous = tuple(state["previous"]) if state["previous"] is not None else None
        self.reached, self.elapsed = bool(state["reached"]), float(state["elapsed"])
        self.crossing = [float(v) for v in state.get("crossing", [])]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = pl_module.device
        self.start, self.pending = time.perf_counter(), [(w.to(device), *rest) for w, *rest in self.resumed]
        self.resumed = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        if self.reached:  # a run resumed after its crossing (killed while testing): say it again, and stop
            if self.crossing and not trainer.should_stop:
                self._log(pl_module, *self.crossing)
                trainer.should_stop = True
            return
        if not isinstance(outputs, dict) or "wrong" not in outputs:
            return
        epochs = trainer.current_epoch + (batch_idx + 1) / trainer.num_training_batches
        seconds = self.elapsed + time.perf_counter() - self.start
        self.pending.append((outputs["wrong"].detach(), int(outputs["images"]), epochs, seconds))
        last_batch = batch_idx + 1 == trainer.num_training_batches
        if sum(p[1] for p in self.pending) * trainer.world_size < self.window_images and not last_batch:
            return
        wrong = trainer.strategy.reduce(torch.stack([p[0] for p in self.pending]).float(), reduce_op="sum").tolist()
        images = trainer.strategy.reduce(torch.tensor([float(p[1]) for p in self.pending], device=self.pending[0][0].device),
                                         reduce_op="sum").tolist()  # fmt: skip
        batches = [(w, int(n), e, s) for w, n, (_, _, e, s) in zip(wrong, images, self.pending)]
        self.pending = []
        for mistakes, count, epochs, seconds in batches:
            if self._add(mistakes, count, epochs, seconds, 1.0 / trainer.num_training_batches, pl_module):
                trainer.should_stop = True  # after this batch (once trainer.min_epochs are done)
                return

    def _add(self, mistakes: float, count: int, epochs: float, seconds: float, batch_epochs: float,
             pl_module: L.LightningModule) -> bool:  # fmt: skip
        """Slide the window over one more batch; log and return True at the first crossing."""
        self.window.append((mistakes, count))
        while sum(n for _, n in self.window[1:]) >= self.window_images:
            self.window.pop(0)
        held = sum(n for _, n in self.window)
        if held < self.window_images:  # not one full window of training yet
            return False
        oldest, oldest_count = self.window[0]
        inside = oldest_count - (held - self.window_images)  # images of the oldest batch still in the window
        error = 100.0 * (sum(w for w, _ in self.window[1:]) + oldest * inside / oldest_count) / self.window_images
        previous, self.previous = self.previous, (error, epochs, seconds)
        if error > self.below:
            return False
        if previous is None:  # below it in the first full window already: it crossed somewhere before, unknown where
            at, when, resolution = epochs, seconds, epochs
        else:  # interpolated inside this batch, between the running error before it and after it
            before, before_epochs, before_seconds = previous
            share = 1.0 if before <= error else (before - self.below) / (before - error)
            at, when = (
                before_epochs + share * (epochs - before_epochs),
                before_seconds + share * (seconds - before_seconds),
            )
            resolution = batch_epochs
        self.reached, self.crossing = True, [at, when, resolution]
        self._log(pl_module, at, when, resolution)
        return True

    @staticmethod
    def _log(pl_module: L.LightningModule, epochs: float, seconds: float, resolution: float) -> None:
        for name, value in (("epochs", epochs), ("seconds", seconds), ("resolution", resolution)):
            pl_module.log(f"milestone/{name}", value, on_epoch=True, on_step=False)
