"""Checkpoints that are never half-written, load without running code, and are saved when the run is told to stop.

A checkpoint holds tensors and plain values only (Lightning's loop and callback states, the run config as plain
containers, the RNG states as tensors), so every load uses ``torch.load(weights_only=True)``: a crafted file's
pickled code never runs, and no global is allow-listed.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import re
import resource
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from alexnet_lab.errors import ConfigError, UserError
from alexnet_lab.files import atomic_write
from alexnet_lab.trust import check_config, check_values

log = logging.getLogger(__name__)

INTERRUPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect from a pre-empted job


class UnsafeCheckpoint(ValueError):
    """A checkpoint that only loads by running code that came with it."""


def safe_load(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``: tensors and plain values only; anything else is refused, not run."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message names the refused global on one of its lines
        found = next((line for line in str(err).splitlines() if "GLOBAL" in line), str(err).splitlines()[0])
        raise UnsafeCheckpoint(found.split("WeightsUnpickler error: ")[-1].strip().rstrip(".")) from err


def newest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint in ``folder`` holding the latest training state: the highest (epoch, step) stored in it, a
    ``last*.ckpt`` before another file of the same step; None if there is none. Names alone can mislead (a run dir
    copied elsewhere gets ``last-v1.ckpt`` beside a stale ``last.ckpt``). Each is read memory-mapped, weights only;
    one that does not load that way is passed over (and refused if it is given by name)."""
    found: list[tuple[int, int, bool, Path]] = []
    for path in sorted(folder.glob("*.ckpt")) if folder.is_dir() else []:
        if path.is_symlink():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            found.append(
                (int(state.get("epoch", -1)), int(state.get("global_step", -1)), path.name.startswith("last"), path)
            )
        except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, TypeError, AttributeError) as err:
            log.warning("passed over %s: it does not load as a checkpoint of weights and plain values (%s)", path, err)
    return max(found)[3] if found else None


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written; the previous file at that path is untouched."""


# what torch's zip writer raises when the file cannot take more bytes (a full disk, a file-size limit): a
# RuntimeError, not the OSError beneath it
_WRITER_FAILED = re.compile(r"PytorchStreamWriter failed|file write failed|unexpected pos")


def _full(path: Path) -> int | None:
    """ENOSPC when the folder's disk has (almost) no room left, EFBIG when this process may not grow files, else None."""
    try:
        stats = os.statvfs(path.parent)
        if stats.f_bavail * stats.f_frsize < 16 * 2**20:
            return errno.ENOSPC
    except OSError:
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return errno.EFBIG if limit != resource.RLIM_INFINITY else None


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``.

    A kill or a full disk during the write leaves the previous file as it was (fsspec's transaction, which
    Lightning uses, stages in /tmp and copies across filesystems, which is not atomic).
    """
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not _WRITER_FAILED.search(str(err)):
            raise
        code = err.errno if isinstance(err, OSError) else _full(path)
        why = err.strerror if isinstance(err, OSError) and err.strerror else os.strerror(code) if code else str(err)
        hint = "free some space" if code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else "check the folder"
        error = CheckpointWriteError(
            f"could not write checkpoint {path} ({why.splitlines()[0]}); {hint}, earlier checkpoints are untouched"
        )
        error.errno = code
        raise error from err
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with :func:`atomic_torch_save` for local paths."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, Path(path))


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, kept inside its run's checkpoints folder and counting epochs from 1.

    Two of them run (conf/callbacks): the best epoch by the monitored metric, and ``last.ckpt`` (``monitor: null``,
    rewritten every epoch), for resuming. One callback with ``save_last=True`` would not do: since Lightning
    2.6 it rewrites last.ckpt only in an epoch that also saved a top-k checkpoint, so after the best epoch a resume
    would repeat every later epoch.
    """

    @property
    def _legacy_state_key(self) -> str:
        # checkpoints written before this class got its name keep its state under the old one; Lightning looks up
        # this key when the state key is missing, so their best-checkpoint bookkeeping is restored, not dropped
        return self.state_key.replace(type(self).__qualname__, "BestAndLastCheckpoint", 1)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # what killed saves of earlier processes left (atomic writes name their temporary file by pid); the run dir is
        # this process's alone (alexnet-train holds its lock)
        if trainer.is_global_zero and self.dirpath and Path(self.dirpath).is_dir():
            for stale in Path(self.dirpath).glob(".*.tmp"):
                if stale.is_file() and not stale.name.endswith(f".{os.getpid()}.tmp"):
                    stale.unlink()
                    log.info("removed %s, left by a save that was killed", stale)

    def _inside(self, path: object) -> bool:
        """A plain local file directly in this callback's folder (no protocol, no way out)."""
        folder = Path(self.dirpath).resolve() if self.dirpath else None
        return (
            isinstance(path, str) and "://" not in path and folder is not None and Path(path).resolve().parent == folder
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning's restore, if every path the state names is a file in this run's checkpoints folder. A checkpoint
        from elsewhere could name any path (a later save deletes the "worse" ones); a run dir moved since names its
        old place. Either way its best and top-k bookkeeping starts afresh instead."""
        named = [state_dict.get(k) for k in ("best_model_path", "kth_best_model_path", "last_model_path")]
        named += list(state_dict.get("best_k_models") or {})
        if all(self._inside(p) for p in named if p):
            super().load_state_dict(state_dict)
        else:
            log.info("checkpoint state names files outside %s: best and top-k bookkeeping start afresh", self.dirpath)

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if self._inside(filepath):  # never anything but this run's own checkpoint files
            super()._remove_checkpoint(trainer, filepath)

    def format_checkpoint_name(self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None,
                               prefix: str | None = None) -> str:  # fmt: skip
        """``epoch001-...`` for the first epoch: files count epochs as the console line and TensorBoard do."""
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": int(metrics["epoch"]) + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)


class SaveOnInterrupt(L.Callback):
    """On SIGTERM (pre-emption) or Ctrl-C, finish the current batch and save a resumable ``last.ckpt``.

    Ctrl-C is turned into Lightning's SIGTERM handling so that training stops between two batches, never
    inside an optimizer step; a second Ctrl-C interrupts at once.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.saved: Path | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def first_ctrl_c(signum: int, frame: Any) -> None:
            log.warning("Ctrl-C: stopping after this batch and saving a checkpoint (press again to abort)")
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.kill(os.getpid(), signal.SIGTERM)

        if trainer.is_global_zero and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, first_ctrl_c)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.saved = self.dirpath / "last.ckpt"
            trainer.save_checkpoint(self.saved, weights_only=False)  # a full checkpoint: it resumes the run
            log.warning("stopped by a signal: saved %s", self.saved)


# ------------------------------------------------------------------- a checkpoint read back (eval, predict, resume)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by alexnet-train, or a clear error."""
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/<file>.ckpt")
    try:
        ckpt = safe_load(path)
    except UnsafeCheckpoint as err:
        old = " (a checkpoint of alexnet-lab before 2026-11-28 holds its NumPy RNG state as an array: use that " \
            "version for it)" if "numpy" in str(err) else ""  # fmt: skip
        raise ConfigError(
            f"checkpoint {path} was refused: loading it would run code it carries ({err}); alexnet-train's "
            f"checkpoints hold tensors and plain values only{old}"
        ) from err
    except Exception as err:
        raise ConfigError(f"checkpoint {path} is unreadable ({type(err).__name__}); pick another file") from err
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    trained = hparams.get("run_config") if isinstance(hparams, dict) else None
    shaped = (
        isinstance(trained, dict)
        and all(isinstance(trained.get(k), dict) for k in ("model", "data"))
        and isinstance(ckpt.get("state_dict"), dict)
        and all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values())
        and trained.get("channels_last", False) in (True, False, "auto")
    )
    if not shaped:
        raise ConfigError(f"checkpoint {path} was not written by alexnet-train (no run_config, model, data and "
                          "state_dict of its shape); pick one that was")  # fmt: skip
    # its config is data: no value is an interpolation, and what is built from it (the network and the data) only as
    # the project's configs offer
    check_values(trained, f"checkpoint {path}")
    check_config({k: trained[k] for k in ("model", "data")}, f"checkpoint {path}")
    if trained["model"].get("weights") is not None:  # torchvision's classes would download them
        raise ConfigError(f"checkpoint {path}: model.weights={trained['model']['weights']!r}; its weights are in the "
                          "checkpoint, nothing is downloaded: pick one trained by alexnet-train")  # fmt: skip
    return ckpt


def restored(ckpt: dict[str, Any], cfg: DictConfig) -> tuple[DictConfig, DictConfig]:
    """(model, data) configs to rebuild a checkpoint's network and data on this machine: its own, with the keys set
    in today's ``data`` on top; derived files (decoded caches, resized copies) go under this machine's data dir unless
    today's ``data.cache_dir`` says otherwise, never where the checkpoint's config points."""
    trained = OmegaConf.create(ckpt["hyper_parameters"]["run_config"])
    data = OmegaConf.merge(trained.data, {k: v for k, v in cfg.data.items() if v is not None})
    if cfg.data.get("cache_dir") is None:
        kind = "imagenet" if "ImageNet" in str(data.get("_target_", "")) else "cifar10"
        data.cache_dir = str(Path(cfg.paths.data_dir) / kind)
    return trained.model, data


def class_count(data: DictConfig, path: Path) -> int:
    """The class count a checkpoint's data config records (its network's output width)."""
    count = data.get("num_classes")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"checkpoint {path} records data.num_classes={count!r}, not a class count; pick one written "
                          "by alexnet-train")  # fmt: skip
    return count


def check_fits(ckpt: dict[str, Any], module: torch.nn.Module, path: Path) -> None:
    """Refuse, in one line, a checkpoint whose weights do not fit ``module`` (another network or class count)."""
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt.get("state_dict", {}).items()}
    if want != got:
        diff = next(k for k in sorted(want.keys() | got.keys()) if want.get(k) != got.get(k))
        model = ckpt["hyper_parameters"]["run_config"].get("model", {})
        raise ConfigError(
            f"checkpoint {path} holds {str(model.get('_target_', '?')).rsplit('.', 1)[-1]} with num_classes="
            f"{model.get('num_classes', '?')}, which does not fit this run's network ({diff}: {got.get(diff)} vs "
            f"{want.get(diff)}); use the model= and data settings it was trained with"
        )
