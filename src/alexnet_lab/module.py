"""The LightningModule: cross-entropy, top-1/top-5 error per stage, optimizer and scheduler from config."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypedDict

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection, MinMetric
from torchmetrics.classification import MulticlassAccuracy

from alexnet_lab.batches import Batch, Views
from alexnet_lab.errors import UserError
from alexnet_lab.models import ParamGroup

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


class TrainingDiverged(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""


class TrainStepOutput(TypedDict):
    """What a training step hands to callbacks (``outputs`` of ``on_train_batch_end``)."""

    loss: torch.Tensor  # the batch's mean cross-entropy, backpropagated by Lightning
    wrong: torch.Tensor  # top-1 mistakes in the batch, a device scalar (reading it waits for the device)
    images: int  # images in the batch


def stage_metrics(stage: str, num_classes: int) -> MetricCollection:
    """``<stage>/loss``, ``<stage>/top1`` and ``<stage>/top5`` (accuracies), accumulated on the device with
    ``update(value=loss, weight=images, preds=logits, target=labels)``: each metric takes its own keywords."""
    return MetricCollection(
        {
            "loss": MeanMetric(nan_strategy="disable"),  # keep NaN (to detect divergence), skip a per-step sync
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        },
        prefix=f"{stage}/",
        compute_groups=False,  # three different states: nothing to share
    )


def as_errors(values: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
    """A stage's computed metrics as logged: loss, and top-1 / top-5 error in percent."""
    return {
        f"{stage}/loss": values[f"{stage}/loss"],
        f"{stage}/top1_err": 100.0 * (1.0 - values[f"{stage}/top1"]),
        f"{stage}/top5_err": 100.0 * (1.0 - values[f"{stage}/top5"]),
    }


class Classifier(L.LightningModule):
    """Trains any image classifier ``net`` with cross-entropy.

    ``optimizer`` and ``scheduler`` are factories (Hydra ``_partial_``) that still need the parameters and the
    optimizer. The network itself is never pickled into hparams: ``run_config`` (the composed Hydra config
    as plain containers) is stored instead, so a checkpoint knows how to rebuild its network.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None,
        scheduler: SchedulerFactory | None = None,
        num_classes: int = 10,
        monitor: str = "val/top1_err",
        channels_last: bool | str = False,
        compile: bool | str = False,
        run_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        if channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last={channels_last!r}: use true, false or auto")
        self.nhwc = channels_last is True  # "auto" is decided in setup(), once the device is known
        self.net = net.to(memory_format=torch.channels_last) if self.nhwc else net
        if compile:  # true: torch.compile's default backend (inductor); a string names another, e.g. aot_eager
            # in place: parameter names, and so checkpoints, stay as without it
            self.net.compile(**({} if compile is True else {"backend": compile}))
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.train_metrics = stage_metrics("train", num_classes)
        self.val_metrics = stage_metrics("val", num_classes)
        self.test_metrics = stage_metrics("test", num_classes)
        self.val_top1_err_best = MinMetric()
        self.val_top1_err_best.persistent(True)  # kept in checkpoints so a resumed run remembers its best

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last == "auto":
            # NHWC is faster on CPUs and slower on GPUs for these networks (benchmarks/README.md)
            self.nhwc = self.trainer.strategy.root_device.type == "cpu"
            if self.nhwc:
                self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, stage: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(loss, logits) of a batch, accumulated into the stage's metrics; None for a batch with no images."""
        x, y = batch
        if y.numel() == 0:  # every image of the batch was unreadable and skipped (data.skip_bad_images)
            return None
        if isinstance(x, Views):  # the paper's 10-crop test averages the views' softmax
            logits = self.view_averaged_log_probs(x)
            loss = F.nll_loss(logits, y)
        else:
            logits = self(x)
            loss = F.cross_entropy(logits, y)
        self._metrics(stage).update(value=loss.detach(), weight=y.numel(), preds=logits.detach(), target=y)
        return loss, logits.detach()

    def _metrics(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")

    def view_averaged_log_probs(self, views: Views) -> torch.Tensor:
        """log of the mean softmax over each image's views (the loss and top-k then score the average)."""
        n, v = views.images.shape[:2]
        probs = self(views.images.flatten(0, 1)).float().softmax(dim=-1).view(n, v, -1).mean(dim=1)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()

    def training_step(self, batch: Batch, batch_idx: int) -> TrainStepOutput | None:
        step = self._step("train", batch)
        if step is None:
            return None
        loss, logits = step
        wrong = (logits.argmax(dim=-1) != batch[1]).sum()
        return TrainStepOutput(loss=loss, wrong=wrong, images=batch[1].numel())

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step("val", batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step("test", batch)

    def _log_epoch(self, stage: str, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Log the stage's ``keys`` (of loss, top1_err, top5_err) for the epoch and reset its metrics.

        Curves are drawn against epochs: a metric named ``step`` is what Lightning takes for the x axis (and it then
        adds no ``epoch`` scalar), so runs with other batch sizes line up. Training and validation of epoch e are
        plotted at e + 1 (epochs trained), testing at the epochs the tested weights trained."""
        values = as_errors(self._metrics(stage).compute(), stage)
        self._metrics(stage).reset()
        self.log_dict({f"{stage}/{k}": values[f"{stage}/{k}"] for k in keys})  # compute() reduced across ranks
        trained = self.current_epoch + (0 if stage == "test" else 1)
        self.log("step", float(trained), sync_dist=False)
        return values

    def _check_finite(self) -> None:
        """Stop a diverged run before its NaN weights are checkpointed (one sync per epoch).

        Lightning calls checkpointing callbacks after the module's ``on_train_epoch_end``, so raising here
        keeps every earlier checkpoint as it was.
        """
        loss = self.train_metrics["loss"].compute()
        if not torch.isfinite(loss):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else float("nan")
            raise TrainingDiverged(
                f"train/loss is {loss.item()} in epoch {self.current_epoch}: training diverged; lower optimizer.lr "
                f"(now {lr:g}) or set trainer.gradient_clip_val"
            )

    def on_train_start(self) -> None:
        # a run resumed mid-epoch gets no on_train_epoch_start for that epoch: its line times the part run here
        self._epoch_start = time.perf_counter()

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        self._check_finite()
        if self.trainer.optimizers:  # the rate this epoch trained at (for per-layer groups: the first, a weight's)
            self.log("train/lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]))
        train = self._log_epoch("train", ("loss", "top1_err"))
        self._print_epoch(train)

    def _print_epoch(self, train: dict[str, torch.Tensor]) -> None:
        """One plain line per epoch for logs without a terminal (SLURM, nohup): the console and the run's log file."""
        if not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        val = self.trainer.callback_metrics  # this epoch's validation ran before the training epoch's end
        shown = f"val error top-1 {float(val['val/top1_err']):.2f} %, top-5 {float(val['val/top5_err']):.2f} %, " if (
            "val/top1_err" in val) else ""  # fmt: skip
        log.info(
            "epoch %d/%d: train loss %.4f, train error top-1 %.2f %%, %s%.1f s",
            self.current_epoch + 1,
            self.trainer.max_epochs,
            float(train["train/loss"]),
            float(train["train/top1_err"]),
            shown,
            time.perf_counter() - self._epoch_start,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # dropout and any other draw from the global generators continue exactly after a resume
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint and self.trainer.state.fn == "fit":  # not when testing a checkpoint
            set_rng_states(checkpoint["rng_states"])

    def on_validation_epoch_start(self) -> None:
        # validation inside an epoch (trainer.val_check_interval) ends in a checkpoint: NaN weights never get there
        if (
            self.trainer.state.fn == "fit"
            and not self.trainer.sanity_checking
            and self.train_metrics["loss"].update_called
        ):
            self._check_finite()

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val", ("loss", "top1_err", "top5_err"))
        if not self.trainer.sanity_checking:
            self.val_top1_err_best.update(values["val/top1_err"])
            self.log("val/top1_err_best", self.val_top1_err_best.compute())

    def on_test_epoch_end(self) -> None:
        values = self._log_epoch("test", ("loss", "top1_err", "top5_err"))
        if self.trainer.is_global_zero:  # rounded, instead of Lightning's table of raw floats (verbose=False)
            log.info("test: error top-1 %.2f %%, top-5 %.2f %%, loss %.4f", *(float(values[f"test/{k}"])
                     for k in ("top1_err", "top5_err", "loss")))  # fmt: skip

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        if len(optimizer.param_groups) > 1 and self._trainer is not None:  # once, when training starts
            log.info(
                "per-layer optimizer settings from the network: %s",
                ", ".join(f"{g['name']} lr {g['lr']:g} wd {g['weight_decay']:g}" for g in optimizer.param_groups),
            )
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor, "interval": "epoch"},
        }

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The configured optimizer; a network with per-layer settings (``param_groups()``, as cuda-convnet's nets
        have) gets one parameter group per layer: ``lr`` times the group's ``lr_scale``, and its own weight decay."""
        param_groups = getattr(self.net, "param_groups", None)
        if param_groups is None:
            return self.optimizer_factory(params=self.parameters())
        groups: list[ParamGroup] = param_groups()
        optimizer = self.optimizer_factory(
            params=[
                {"params": g.params, "name": g.name}
                | ({} if g.weight_decay is None else {"weight_decay": g.weight_decay})
                for g in groups
            ]
        )
        for torch_group, group in zip(optimizer.param_groups, groups, strict=True):
            torch_group["lr"] *= group.lr_scale
        return optimizer


def rng_states() -> dict[str, Any]:
    """The global generators' states (Lightning's layout, as its ``seed_everything`` seeds them) in types
    ``torch.load(weights_only=True)`` reads back: NumPy's keys as a tensor."""
    name, keys, *rest = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), *rest],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
