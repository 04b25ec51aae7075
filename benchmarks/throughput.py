"""Training throughput: the project's Lightning path against a plain PyTorch loop, in one process.

Both paths train the same network (same initial weights) with the same optimizer, batch size and device-resident
data (the project's ``TensorBatches`` loader: uint8 tensors, batched crop/flip, normalisation). They run
alternately, ``--repeats`` times each; the median images/s of each and their ratio are printed as JSON.

    python benchmarks/throughput.py --model alexnet_cifar --batch-size 128
    python benchmarks/throughput.py --model alexnet --batch-size 128 --precision bf16-mixed   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import RichProgressBar

from alexnet_lab.data import Normalize, TensorBatches
from alexnet_lab.models import AlexNet, AlexNetCIFAR, CudaConvnet18pct
from alexnet_lab.module import Classifier

NETWORKS = {"alexnet": (AlexNet, 224), "alexnet_cifar": (AlexNetCIFAR, 32), "cudaconvnet_18pct": (CudaConvnet18pct, 32)}


class StepTimer(L.Callback):
    """Wall time of the training steps after ``warmup`` (the device is synchronised at both ends)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            _sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module.device)
        self.end = time.perf_counter()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> TensorBatches:
    return TensorBatches(images, labels, batch_size, Normalize([0.5] * 3, [0.25] * 3), shuffle=True, drop_last=True,
                         crop_padding=4, hflip=True, views="random", seed=0)  # fmt: skip


def lightning_path(net: torch.nn.Module, data: TensorBatches, args: argparse.Namespace) -> float:
    """images/s through Trainer.fit as the template runs it: progress bar, metrics updated every step, logged per epoch."""
    module = Classifier(net, optimizer=lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4),
                        num_classes=1000 if args.model == "alexnet" else 10, channels_last=args.channels_last)  # fmt: skip
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        accelerator=args.device, devices=1, precision=args.precision, max_steps=args.warmup + args.steps,
        logger=False, enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, benchmark=args.device == "gpu",
        callbacks=[timer, RichProgressBar(refresh_rate=10)],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=data)
    return args.steps * args.batch_size / (timer.end - timer.start)


def plain_loop(net: torch.nn.Module, data: TensorBatches, args: argparse.Namespace, device: torch.device) -> float:
    """images/s of the textbook loop: forward, cross-entropy, backward, step (autocast for mixed precision)."""
    net = net.to(device).train()
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    batches = iter(data)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        x, y = next(batches)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(NETWORKS), default="alexnet_cifar")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each path, alternating")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="gpu" if torch.cuda.is_available() else "cpu", choices=["cpu", "gpu"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    cls, size = NETWORKS[args.model]
    classes = 1000 if args.model == "alexnet" else 10
    n = (args.warmup + args.steps + 1) * args.batch_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, classes, (n,), generator=generator).to(device)
    torch.manual_seed(0)
    template = cls(num_classes=classes)
    if args.device == "gpu":
        torch.backends.cudnn.benchmark = True
    results: dict[str, list[float]] = {"lightning": [], "plain": []}
    for _ in range(args.repeats):
        results["lightning"].append(
            lightning_path(copy.deepcopy(template), loader(images, labels, args.batch_size), args)
        )
        results["plain"].append(
            plain_loop(copy.deepcopy(template), loader(images, labels, args.batch_size), args, device)
        )
    lightning, plain = statistics.median(results["lightning"]), statistics.median(results["plain"])
    print(json.dumps({
        "benchmark": "throughput", "model": args.model, "input": f"{size}x{size}", "batch_size": args.batch_size,
        "precision": args.precision, "channels_last": args.channels_last,
        "device": torch.cuda.get_device_name() if args.device == "gpu" else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "torch": torch.__version__, "lightning": L.__version__, "steps": args.steps, "repeats": args.repeats,
        "lightning_images_per_s": round(lightning, 1), "plain_images_per_s": round(plain, 1),
        "ratio_lightning_over_plain": round(lightning / plain, 3),
        "all_lightning": [round(v, 1) for v in results["lightning"]], "all_plain": [round(v, 1) for v in results["plain"]],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
