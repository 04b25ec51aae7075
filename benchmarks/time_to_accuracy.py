"""Wall seconds and epochs until a run first reaches a target test accuracy, on the current device.

Runs ``alexnet-train`` with your overrides plus ``data.val_size=0`` (the validation pass is then the test split,
evaluated after every epoch, as time-to-accuracy benchmarks do) and reads the per-epoch accuracy and its wall
time from the run's TensorBoard events; unless your overrides name a scheduler or an experiment, a fixed learning
rate (``scheduler=none``: the default plateau schedule would follow the test split, which alexnet-train refuses).
Prints one JSON line.

    python benchmarks/time_to_accuracy.py --target 60 -- experiment=tutorial_cifar10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, required=True, help="test accuracy in percent, e.g. 88")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for alexnet-train (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        named = any(o.startswith(("scheduler=", "experiment=")) for o in args.overrides)
        fixed = [] if named else ["scheduler=none"]
        command = [str(Path(sys.executable).with_name("alexnet-train")), *fixed, *args.overrides, "data.val_size=0", "test=false",
                   "~callbacks.rich_progress_bar", "~callbacks.model_checkpoint",
                   "~callbacks.last_checkpoint"]  # fmt: skip
        subprocess.run(command, env=dict(os.environ, ALEXNET_LOG_DIR=logs), check=True)
        (run,) = Path(logs, "train", "runs").iterdir()
        record = json.loads((run / "metrics.json").read_text())
        events = EventAccumulator(str(run), size_guidance={"scalars": 0})
        events.Reload()
        start = events.FirstEventTimestamp()
        curve = [(i + 1, 100.0 - e.value, e.wall_time - start) for i, e in enumerate(events.Scalars("val/top1_err"))]
    reached = next(((epoch, seconds) for epoch, acc, seconds in curve if acc >= args.target), None)
    print(json.dumps({
        "benchmark": "time_to_accuracy", "target_test_accuracy": args.target, "overrides": args.overrides,
        "reached": reached is not None, "epochs": reached[0] if reached else None,
        "seconds": round(reached[1], 1) if reached else None,
        "test_accuracy_per_epoch": [round(acc, 2) for _, acc, _ in curve],
        "seconds_per_epoch": [round(s, 1) for _, _, s in curve],
        "training_seconds": record.get("seconds"), "torch": record.get("versions", {}).get("torch"),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
