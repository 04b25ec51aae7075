"""One epoch of the tutorial's run, side by side: `alexnet-train experiment=tutorial_cifar10` exactly as configured
(its optimizer, callbacks, progress bar, loggers, validation), a plain PyTorch loop with the same network, optimizer,
batch size and data, and the tutorial's own Keras code (optional: give a Python that has TensorFlow).

Each path trains one epoch on CIFAR-10's 50,000 training images and validates on its 10,000 test images (as the
tutorial does), one after the other in this order, so they do not share the cores. Prints seconds per epoch
(training + validation) of each and their ratios as JSON; with ``--profile`` also the 20 functions of the Lightning
run with the most time spent in themselves (torch's kernels show up as the built-in methods that call them).

    python benchmarks/epoch.py --data ../shared/data/cifar10-jpeg.tar.gz --keras-python /tmp/kerasvenv/bin/python
    python benchmarks/epoch.py --data ... --limit 20        # a check that every path runs (20 training batches each)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexnet_lab.data import CIFAR10DataModule
from alexnet_lab.models import AlexNetCIFAR

# The tutorial's code (../shared/reference/tutorial-alexnet-keras-zh.txt) as it stands, reading the same images
# from an .npz instead of downloading them, with a callback that times the epoch (fit's own bar prints it too).
KERAS = """
import json, sys, time
import numpy as np
import tensorflow as tf
from tensorflow.keras import layers, Sequential

data = np.load(sys.argv[1])
limit = int(sys.argv[2])
training_x, training_y = data["train_x"][:limit] / np.float32(255), data["train_y"][:limit]
testing_x, testing_y = data["test_x"] / np.float32(255), data["test_y"]
model = Sequential([
    layers.Conv2D(filters=96, kernel_size=(3, 3)), layers.BatchNormalization(), layers.Activation('relu'),
    layers.MaxPool2D(pool_size=(3, 3), strides=2),
    layers.Conv2D(filters=256, kernel_size=(3, 3)), layers.BatchNormalization(), layers.Activation('relu'),
    layers.MaxPool2D(pool_size=(3, 3), strides=2),
    layers.Conv2D(filters=384, kernel_size=(3, 3), padding='same', activation='relu'),
    layers.Conv2D(filters=384, kernel_size=(3, 3), padding='same', activation='relu'),
    layers.Conv2D(filters=256, kernel_size=(3, 3), padding='same', activation='relu'),
    layers.MaxPool2D(pool_size=(3, 3), strides=2),
    layers.Flatten(),
    layers.Dense(2048, activation='relu'), layers.Dropout(0.5),
    layers.Dense(2048, activation='relu'), layers.Dropout(0.5),
    layers.Dense(10, activation='softmax'),
])
model.compile(optimizer='adam', loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=False),
              metrics=['sparse_categorical_accuracy'])

class Timer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):  # after the epoch's validation
        self.seconds, self.logs = time.perf_counter() - self.start, logs

timer = Timer()
model.fit(training_x, training_y, batch_size=32, epochs=1, validation_data=(testing_x, testing_y), callbacks=[timer],
          verbose=2)
print("RESULT " + json.dumps({"seconds": timer.seconds, "val_accuracy": float(timer.logs["val_sparse_categorical_accuracy"]),
                              "tensorflow": tf.__version__}))
"""

EPOCH_LINE = re.compile(r"epoch 1/1: .*val top-1 ([0-9.]+) %.*, ([0-9.]+) s")


def data_module(args: argparse.Namespace) -> CIFAR10DataModule:
    """The tutorial's data as the template serves it: x / 255, no augmentation, validation on the test split."""
    dm = CIFAR10DataModule(args.data, args.cache_dir, batch_size=32, eval_batch_size=1000, val_size=0, crop_padding=0,
                           hflip=False, mean=None, std=None)  # fmt: skip
    dm.prepare_data()
    dm.setup()
    return dm


def template_epoch(args: argparse.Namespace, log_dir: Path) -> dict:
    """`alexnet-train experiment=tutorial_cifar10` for one epoch, as `make train` runs it; its own per-epoch line
    (training + validation seconds) is the figure."""
    limit = [f"trainer.limit_train_batches={args.limit}"] if args.limit else []
    command = ["experiment=tutorial_cifar10", "trainer.max_epochs=1", "test=false", f"data.path={args.data}",
               f"data.cache_dir={args.cache_dir}", *limit]  # fmt: skip
    profile = log_dir / "lightning.prof"
    runner = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "alexnet_lab.train"] if args.profile else [
        str(Path(sys.executable).with_name("alexnet-train"))]  # fmt: skip
    env = {**os.environ, "ALEXNET_LOG_DIR": str(log_dir)}
    start = time.perf_counter()
    proc = subprocess.run([*runner, *command], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    found = EPOCH_LINE.search(proc.stdout + proc.stderr)
    if proc.returncode or not found:
        raise SystemExit(f"alexnet-train failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = {"seconds": float(found[2]), "val_top1_err": float(found[1]), "process_wall_seconds": round(wall, 1)}
    if args.profile:
        stats = pstats.Stats(str(profile))
        rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:20]  # by time in the function
        result["profile_own_seconds"] = {f"{Path(f).name}:{n}({name})": round(v[2], 1) for (f, n, name), v in rows}
        result["profile_total_s"] = round(stats.total_tt, 1)
    return result


def plain_epoch(dm: CIFAR10DataModule, args: argparse.Namespace, channels_last: bool) -> dict:
    """The textbook loop over the same batches: forward, cross-entropy, backward, Adam step; then the validation
    pass (no_grad, eval mode) over the test split. ``channels_last``: NHWC, as the template's default ``auto``
    picks on a CPU."""
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = AlexNetCIFAR(num_classes=10).to(memory_format=layout)
    optimizer = torch.optim.Adam(net.parameters())  # the tutorial's optimizer='adam': lr 0.001
    start = time.perf_counter()
    net.train()
    for i, (x, y) in enumerate(dm.train_dataloader()):
        if args.limit and i == args.limit:
            break
        loss = F.cross_entropy(net(x.contiguous(memory_format=layout)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval()
    wrong = seen = 0
    with torch.no_grad():
        for x, y in dm.val_dataloader():
            wrong += int((net(x.contiguous(memory_format=layout)).argmax(-1) != y).sum())
            seen += len(y)
    return {"seconds": round(time.perf_counter() - start, 1), "val_top1_err": round(100 * wrong / seen, 2)}


def keras_epoch(dm: CIFAR10DataModule, args: argparse.Namespace, folder: Path) -> dict:
    """The tutorial's Keras code, in a Python with TensorFlow, on the same uint8 images (NHWC, as Keras loads them)."""
    arrays = folder / "cifar10.npz"
    train_x, train_y = dm.splits["train"]
    test_x, test_y = dm.splits["test"]
    np.savez(arrays, train_x=train_x.permute(0, 2, 3, 1).numpy(), train_y=train_y.numpy(),
             test_x=test_x.permute(0, 2, 3, 1).numpy(), test_y=test_y.numpy())  # fmt: skip
    limit = str(args.limit * 32 if args.limit else len(train_y))  # training images; it validates on all the test split
    proc = subprocess.run([args.keras_python, "-c", KERAS, str(arrays), limit], capture_output=True, text=True,
                          check=False)  # fmt: skip
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"the Keras code failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads(line.removeprefix("RESULT "))
    return {"seconds": round(result["seconds"], 1), "val_top1_err": round(100 * (1 - result["val_accuracy"]), 2),
            "tensorflow": result["tensorflow"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10: an archive or folder (as data.path)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "alexnet-lab"), help="the decoded cache")
    parser.add_argument("--keras-python", help="a Python with TensorFlow: also time the tutorial's Keras code")
    parser.add_argument("--limit", type=int, default=0, help="train on this many batches only (a check)")
    parser.add_argument("--profile", action="store_true", help="cProfile the Lightning run")
    args = parser.parse_args()
    dm = data_module(args)
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "template": template_epoch(args, Path(tmp)),
            "plain_loop": plain_epoch(dm, args, channels_last=False),
            "plain_loop_channels_last": plain_epoch(dm, args, channels_last=True),
        }
        if args.keras_python:
            results["keras"] = keras_epoch(dm, args, Path(tmp))
    seconds = {name: r["seconds"] for name, r in results.items()}
    print(json.dumps({
        "benchmark": "epoch", "experiment": "tutorial_cifar10", "limit_batches": args.limit or None,
        "device": f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), **results,
        "ratio_template_over_plain": round(seconds["template"] / seconds["plain_loop"], 3),
        "ratio_template_over_plain_channels_last": round(seconds["template"] / seconds["plain_loop_channels_last"], 3),
        **({"ratio_template_over_keras": round(seconds["template"] / seconds["keras"], 3)} if "keras" in seconds else {}),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
