"""Files from elsewhere are data: opening a crafted checkpoint or batch file runs none of its code, and reading a
dataset never writes into it."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import FAST, isolated_env, run_cli, write_batches, write_jpeg_tree

from alexnet_lab.data import CIFAR10DataModule, DataError


class Payload:
    """What an attacker pickles: unpickling it calls os.system, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_cifar_batch_file_is_refused_without_running_it(tmp_path: Path) -> None:
    folder = write_batches(tmp_path / "cifar")
    marker = tmp_path / "pwned"
    crafted = {b"data": Payload(marker), b"labels": [0]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(crafted))
    dm = CIFAR10DataModule(path=str(folder), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    assert str(err.value) == (
        f"{folder}/data_batch_3 is not a CIFAR-10 batch file (refused global posix.system); it was not loaded"
    )
    assert not marker.exists()
    # an official file's own contents still load: dicts, lists, bytes and numeric arrays
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": [[1.0]], b"labels": [0]}))  # wrong shape, no code
    with pytest.raises(DataError, match="corrupt CIFAR-10 batch file"):
        CIFAR10DataModule(path=str(folder), cache_dir=str(tmp_path / "cache2")).prepare_data()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("trust")
    write_batches(tmp / "data" / "cifar10", n_train=300, n_test=60)
    env = isolated_env(tmp)
    run_cli("alexnet-train", *FAST, "trainer.max_epochs=1", "name=honest", env=env, cwd=tmp)
    (run,) = (tmp / "logs" / "train" / "runs").glob("*_honest")
    return {"tmp": tmp, "env": env, "run": run}


def test_checkpoints_hold_only_tensors_and_plain_values(trained: dict) -> None:
    for ckpt in (trained["run"] / "checkpoints").glob("*.ckpt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(ckpt) == []
        loaded = torch.load(ckpt, map_location="cpu", weights_only=True)  # no allow-list needed
        assert isinstance(loaded["rng_states"]["numpy"][1], torch.Tensor)


@pytest.mark.parametrize("script", ["alexnet-eval", "alexnet-train"])
def test_a_crafted_checkpoint_is_refused_without_running_it(trained: dict, script: str) -> None:
    honest = torch.load(trained["run"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    marker = trained["tmp"] / f"pwned-{script}"
    crafted = trained["tmp"] / f"crafted-{script}.ckpt"
    torch.save({**honest, "extra": Payload(marker)}, crafted)  # looks like ours, carries code
    args = [f"ckpt_path={crafted}"] if script == "alexnet-eval" else [*FAST, f"ckpt_path={crafted}"]
    proc = run_cli(script, *args, env=trained["env"], cwd=trained["tmp"], check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: checkpoint {crafted} was refused: loading it would run code it carries (")
    assert "posix.system" in line and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_save_resume_and_eval_all_load_weights_only(trained: dict) -> None:
    """The round trip under weights_only=True: resume from last.ckpt, then evaluate the best checkpoint."""
    run_cli("alexnet-train", *FAST, "trainer.max_epochs=2", "ckpt_path=last", "name=honest",
            env=trained["env"], cwd=trained["tmp"])  # fmt: skip
    record = json.loads((trained["run"] / "metrics.json").read_text())
    assert record["status"] == "finished" and record["epochs"] == 2 and record["resumed_from"].endswith("last.ckpt")
    (best,) = (trained["run"] / "checkpoints").glob("epoch*.ckpt")
    run_cli("alexnet-eval", f"ckpt_path={best}", env=trained["env"], cwd=trained["tmp"])
    (evaluated,) = (trained["tmp"] / "logs" / "eval" / "runs").glob("*/metrics.json")
    assert json.loads(evaluated.read_text())["final"]["test/top1_err"] >= 0.0


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)


def test_a_read_only_cifar_tree_trains_and_tests_and_stays_as_it_was(tmp_path: Path) -> None:
    data = tmp_path / "readonly"
    write_batches(data)
    read_only(data)
    before = snapshot(data)
    env = isolated_env(tmp_path)
    run_cli("alexnet-train", *FAST, "trainer.max_epochs=1", f"data.path={data}", f"data.cache_dir={tmp_path / 'cache'}",
            env=env, cwd=tmp_path)  # fmt: skip
    (metrics,) = (tmp_path / "logs" / "train" / "runs").glob("*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "finished"
    assert snapshot(data) == before


def test_a_read_only_imagenet_tree_with_its_devkit_serves_both_splits_and_stays_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The devkit beside the tree gives class names: its meta.bin goes into the cache, never into the tree."""
    import hashlib

    from test_imagenet import WNIDS, _fake_ilsvrc, datamodule
    from torchvision.datasets import imagenet as tv_imagenet

    archives = tmp_path / "archives"
    _fake_ilsvrc(archives)  # for its devkit, whose checksum torchvision then accepts
    devkit = (archives / "ILSVRC2012_devkit_t12.tar.gz").read_bytes()
    name = tv_imagenet.ARCHIVE_META["devkit"][0]
    monkeypatch.setitem(tv_imagenet.ARCHIVE_META, "devkit", (name, hashlib.md5(devkit).hexdigest()))
    data = write_jpeg_tree(tmp_path / "imagenet", WNIDS[:2], train=6, val=2)
    (data / name).write_bytes(devkit)
    read_only(data)
    before = snapshot(data)
    dm = datamodule(data, tmp_path, num_classes=2, minival_per_class=1, mean="pixel")
    dm.prepare_data()  # the resized copy, the mean image and meta.bin: all into the cache
    dm.setup()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        loader.sampler.set_epoch(0)
        images, labels, *_ = next(iter(loader))
        assert images.dtype == torch.uint8 and len(labels) > 0
    assert dict(dm.describe()["classes"]) == {WNIDS[0]: "tench, Tinca tinca", WNIDS[1]: "goldfish, Carassius auratus"}
    assert (dm.unpacked_root / "meta.bin").is_file() and not (data / "meta.bin").exists()
    assert snapshot(data) == before


def test_a_checkpoint_from_before_the_rename_keeps_its_best_checkpoint_bookkeeping(tmp_path: Path) -> None:
    """Checkpoints written while the class was BestAndLastCheckpoint store its state under that name; a resume
    restores it (else the first epoch after the resume would count as the best, whatever its score)."""
    from lightning.pytorch.trainer import call

    from alexnet_lab.checkpointing import RunCheckpoint

    def callback() -> RunCheckpoint:
        return RunCheckpoint(dirpath=str(tmp_path), monitor="val/top1_err", mode="min", save_top_k=1)

    best = str(tmp_path / "epoch007-top1err21.00.ckpt")
    state = {**callback().state_dict(), "best_model_path": best, "best_model_score": torch.tensor(21.0),
             "best_k_models": {best: torch.tensor(21.0)}, "kth_best_model_path": best}  # fmt: skip
    old_key = "BestAndLastCheckpoint{'monitor': 'val/top1_err', 'mode': 'min', 'every_n_train_steps': 0, " \
              "'every_n_epochs': 1, 'train_time_interval': None}"  # fmt: skip
    restored = callback()
    trainer = L.Trainer(callbacks=[restored], logger=False, enable_progress_bar=False, enable_model_summary=False)
    call._call_callbacks_load_state_dict(trainer, {"callbacks": {old_key: state}})
    assert restored.best_model_path == best and float(restored.best_model_score) == 21.0
