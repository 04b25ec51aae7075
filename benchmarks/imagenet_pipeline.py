"""ImageNet input pipeline speed: loader only, model only and end to end, in images/s, as JSON, in one run.

On a generated JPEG tree of ImageNet-like photos (sizes around 500x375), rescaled once by the DataModule's
prepare step, for each batch size and decode mode:

- loader: ``ImageNetDataModule`` train batches (worker decoding or nvjpeg), moved to the device and augmented
  there (mean image, PCA lighting, random crop, flip), with nothing trained;
- model: the paper's AlexNet trained on a synthetic batch already on the device (forward, backward, SGD);
- end_to_end: ``Trainer.fit`` of the project's ``Classifier`` on that DataModule, as a run trains.

    python benchmarks/imagenet_pipeline.py --images 8000 --batch-sizes 128 256 --precision bf16-mixed --decode cpu cuda
    python benchmarks/imagenet_pipeline.py --images 256 --batch-sizes 16 --steps 4 --warmup 1   # a CPU check
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from throughput import StepTimer, _sync  # the same timing as throughput.py (this folder is on sys.path)

from alexnet_lab.data import ImageNetDataModule
from alexnet_lab.models import AlexNet
from alexnet_lab.module import Classifier

PCA = {
    "pca_eigval": [0.2175, 0.0188, 0.0045],
    "pca_eigvec": [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
}


def _photo(job: tuple[Path, int]) -> None:
    """A photo-like JPEG: smooth colour fields plus fine noise, about 500x375 (ImageNet's typical size)."""
    path, seed = job
    rng = np.random.default_rng(seed)
    w, h = (500, 375) if rng.random() < 0.6 else (int(rng.integers(300, 640)), int(rng.integers(240, 480)))
    coarse = Image.fromarray(rng.integers(0, 256, (h // 24 + 2, w // 24 + 2, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def make_tree(root: Path, images: int, classes: int) -> None:
    jobs = []
    for split, count in (("train", images), ("val", max(classes, images // 10))):
        for i in range(count):
            folder = root / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"{split}_{i:07d}.JPEG", i + (0 if split == "train" else 10**7)))
    with multiprocessing.get_context("fork").Pool() as pool:
        pool.map(_photo, jobs, chunksize=64)


def datamodule(args: argparse.Namespace, batch_size: int, decode: str) -> ImageNetDataModule:
    dm = ImageNetDataModule(
        str(args.root), str(args.cache), num_classes=args.classes, batch_size=batch_size, decode=decode,
        num_workers=args.workers, mean_images=500, std=0.25, **PCA,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup()
    return dm


def loader_only(dm: ImageNetDataModule, device: torch.device, warmup: int, steps: int) -> float:
    """images/s of batches delivered to the device and augmented there."""
    loader = dm.train_dataloader()
    epoch, seen, start, step = 0, 0, 0.0, 0
    while step < warmup + steps:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            images, _labels, draws, _, _ = dm.transfer_batch_to_device(batch, device, 0)
            x = dm.train_views(images, draws)
            step += 1
            if step == warmup:
                _sync(device)
                start = time.perf_counter()
            elif step > warmup:
                seen += len(x)
            if step == warmup + steps:
                break
        epoch += 1
    _sync(device)
    return seen / (time.perf_counter() - start)


def model_only(args: argparse.Namespace, batch_size: int, device: torch.device, channels_last: bool) -> float:
    """images/s of AlexNet training steps (a plain loop) on one synthetic batch already on the device."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = AlexNet(num_classes=args.classes).to(device, memory_format=layout)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch_size, 3, 224, 224, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, args.classes, (batch_size,), device=device)
    dtype = torch.bfloat16 if args.precision.startswith("bf16") else None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return args.steps * batch_size / (time.perf_counter() - start)


def end_to_end(args: argparse.Namespace, dm: ImageNetDataModule, batch_size: int) -> float:
    """images/s of Trainer.fit on the DataModule, as alexnet-train runs it (metrics updated every step)."""
    module = Classifier(
        AlexNet(num_classes=args.classes),
        lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4),
        num_classes=args.classes,
        channels_last=args.channels_last,
    )
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        accelerator="auto", devices=1, precision=args.precision, max_steps=args.warmup + args.steps,
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, benchmark=True, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return args.steps * batch_size / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root", type=Path, help="a train/ + val/ JPEG tree; generated in a temporary folder if absent"
    )
    parser.add_argument("--images", type=int, default=8000, help="training images to generate")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--decode", nargs="+", default=["cpu"], choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="bf16-mixed" if torch.cuda.is_available() else "32-true")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    parser.add_argument(
        "--channels-last", action="store_true", help="NHWC network and inputs (model-only also runs the other layout)"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            args.root = Path(tmp) / "tree"
            start = time.perf_counter()
            make_tree(args.root, args.images, args.classes)
            generated = round(time.perf_counter() - start, 1)
        else:
            generated = None
        args.cache = Path(tmp) / "cache"
        start = time.perf_counter()
        dm = datamodule(args, args.batch_sizes[0], "cpu")
        prepare_s = time.perf_counter() - start
        report = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "cpus": len(os.sched_getaffinity(0)),
            "workers": dm._workers(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "precision": args.precision,
            "channels_last": args.channels_last,
            "train_images": len(dm.samples["train"]),
            "generated_s": generated,
            "prepare_s (rescale to 256 + mean image)": round(prepare_s, 1),
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "results": [],
        }
        for batch_size in args.batch_sizes:
            model = model_only(args, batch_size, device, args.channels_last)
            other_layout = model_only(args, batch_size, device, not args.channels_last)
            for decode in args.decode:
                row = {"batch": batch_size, "decode": decode}
                row["loader"] = loader_only(datamodule(args, batch_size, decode), device, args.warmup, args.steps)
                row["model"] = model
                row["model, other layout"] = other_layout
                row["end_to_end"] = end_to_end(args, datamodule(args, batch_size, decode), batch_size)
                row["end_to_end / model"] = row["end_to_end"] / model
                report["results"].append({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
                print(json.dumps(report["results"][-1]), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
