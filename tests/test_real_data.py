"""Real CIFAR-10: one epoch of convnet_cifar on the archive named by ALEXNET_CIFAR10 (skipped without it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_cli

ARCHIVE = os.environ.get("ALEXNET_CIFAR10")
# decoded once per machine: the archive may sit on a read-only disk
CACHE = Path(os.environ.get("ALEXNET_TEST_CACHE", Path.home() / ".cache" / "alexnet-lab")).expanduser()


@pytest.mark.slow
@pytest.mark.skipif(not ARCHIVE, reason="set ALEXNET_CIFAR10 to a CIFAR-10 archive or folder")
def test_one_epoch_of_convnet_cifar_beats_chance_by_far(tmp_path: Path) -> None:
    env = dict(os.environ, ALEXNET_LOG_DIR=str(tmp_path / "logs"))
    args = [
        "model=convnet_cifar",
        f"data.path={ARCHIVE}",
        f"data.cache_dir={CACHE}",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "seed=0",
        "~callbacks.rich_progress_bar",
    ]
    run_cli("alexnet-train", *args, env=env, cwd=tmp_path, timeout=900)
    (metrics,) = (tmp_path / "logs" / "train" / "runs").glob("*/metrics.json")
    record = json.loads(metrics.read_text())
    assert record["status"] == "finished" and record["epochs"] == 1
    assert record["steps"] == 45_000 // 128  # 50,000 train images less 5,000 held out, full batches only
    # chance is 90 %; one epoch measured 53.6 % on the 2-core CI machine (seed 0), so 65 % leaves room
    assert record["final"]["test/top1_err"] < 65.0
    assert record["final"]["test/top5_err"] < 20.0
