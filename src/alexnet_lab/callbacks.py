"""Lightning callbacks of our own: the paper's Figure 3 (conv1 filters) in TensorBoard."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchvision.utils import make_grid


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
