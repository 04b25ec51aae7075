"""Synthetic CIFAR-10 in its real formats (official batches, JPEG/PNG class folders, archives), made per test."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REPO = Path(__file__).resolve().parents[1]


def make_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (N, 3, 32, 32) uint8 whose label is learnable: a class-specific mean colour plus noise.

    The official-batch writer stores a sample id in the first two red pixels (see :func:`sample_ids`).
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    base = rng.integers(40, 216, size=(10, 3, 1, 1))
    images = base[labels] + rng.normal(0, 30, size=(n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_batches(root: Path, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """The official python-format layout: root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x, y = make_images(n_train + n_test, seed)
    ids = np.arange(n_train + n_test)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = ids % 256, ids // 256
    per = n_train // 5
    for i in range(5):
        sl = slice(i * per, (i + 1) * per)
        blob = {b"data": x[sl].reshape(per, -1), b"labels": y[sl].tolist(), b"batch_label": b"x"}
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(blob))
    test = {b"data": x[n_train:].reshape(n_test, -1), b"labels": y[n_train:].tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}))
    return folder


def write_tree(
    root: Path, n_train: int = 200, n_test: int = 50, fmt: str = "PNG", seed: int = 0, classes: int = 10
) -> Path:
    """root/train/<class>/*.png and root/test/<class>/*.png (lossless PNG, so pixels can be compared)."""
    x, y = make_images(n_train + n_test, seed)
    y = y % classes
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        folder = root / split / CLASSES[y[i]]
        folder.mkdir(parents=True, exist_ok=True)
        ext = "png" if fmt == "PNG" else "jpg"
        Image.fromarray(x[i].transpose(1, 2, 0)).save(folder / f"{i:05d}.{ext}", format=fmt)
    return root


def write_jpeg_tree(root: Path, wnids: list[str], train: int = 4, val: int = 2, seed: int = 0) -> Path:
    """An ImageNet-style tree root/{train,val}/<wnid>/<wnid>_<i>.JPEG of varied sizes and aspect ratios whose class
    shows in its mean colour. In the first class, image 1 is grayscale, 2 is CMYK and 3 is a PNG named .JPEG,
    as ImageNet really has."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for c, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                w, h = int(rng.integers(40, 120)), int(rng.integers(40, 120))
                img = Image.fromarray(np.clip(rng.normal(30 + 40 * c, 20, (h, w, 3)), 0, 255).astype(np.uint8))
                path = folder / f"{wnid}_{i}.JPEG"
                if c == 0 and i == 1:
                    img.convert("L").save(path, format="JPEG")
                elif c == 0 and i == 2:
                    img.convert("CMYK").save(path, format="JPEG")
                elif c == 0 and i == 3:
                    img.save(path, format="PNG")
                else:
                    img.save(path, format="JPEG", quality=90)
    return root


def sample_ids(images) -> list[int]:
    """The ids written by :func:`write_batches`."""
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


def tar_folder(folder: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


@pytest.fixture
def batches_dir(tmp_path: Path) -> Path:
    return write_batches(tmp_path / "cifar").parent


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    """Environment for the console scripts: logs and data under ``root``, no real data unless a test adds it."""
    env = {k: v for k, v in os.environ.items() if k not in ("ALEXNET_CIFAR10", "ALEXNET_RUN_ID")}
    env.update(ALEXNET_LOG_DIR=str(root / "logs"), ALEXNET_DATA_DIR=str(root / "data"), HYDRA_FULL_ERROR="0", **extra)
    return env


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path)


ENTRY_POINTS = {  # console script -> the module whose main() it runs (pyproject.toml [project.scripts])
    "alexnet-train": "alexnet_lab.train",
    "alexnet-eval": "alexnet_lab.eval",
    "alexnet-predict": "alexnet_lab.predict",
    "alexnet-report": "alexnet_lab.report",
}


def without_local(args: list[str] | tuple[str, ...]) -> list[str]:
    """``args`` plus ``~local``: a test composes the project's configs alone, not this machine's conf/local/default.yaml
    (a user who followed the README has one naming real data); a test of the local config itself says so by giving
    ``hydra.searchpath`` or ``local``."""
    mine = any(a.lstrip("+~").startswith(("hydra.searchpath", "local")) for a in args)
    return list(args) if mine else [*args, "~local"]


def run_cli(
    script: str,
    *args: str,
    env: dict[str, str],
    cwd: Path | None = None,
    check: bool = True,
    timeout: int = 300,
    process: bool = False,
) -> subprocess.CompletedProcess:
    """Run alexnet-train / -eval / -predict / -report as a user types it and return what it printed and its exit
    status. In this process by default (its ``main()`` with this argv, environment and cwd: no 5-7 s of imports);
    ``process=True`` launches the installed console script, for what only a process shows (signals, spawned
    workers, the exit status the shell sees)."""
    if script != "alexnet-report":
        args = tuple(without_local(args))
    if process:
        exe = Path(sys.executable).with_name(script)
        proc = subprocess.run(
            [str(exe), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    else:
        proc = _run_in_process(script, list(args), env, cwd)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def _run_in_process(script: str, args: list[str], env: dict[str, str], cwd: Path | None) -> subprocess.CompletedProcess:
    """``main()`` of ``script`` with ``sys.argv``, ``os.environ`` and the cwd of a fresh command, its output captured
    and its ``sys.exit`` status returned; everything it changed in the process is put back afterwards."""
    import importlib
    import io
    import logging
    import traceback
    from contextlib import redirect_stderr, redirect_stdout

    from hydra.core.global_hydra import GlobalHydra

    from alexnet_lab import runs

    main = importlib.import_module(ENTRY_POINTS[script]).main
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv[:], os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out, err, code = io.StringIO(), io.StringIO(), 0
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [script, *args]
    runs._run_id = None  # a new command gets a new run id
    GlobalHydra.instance().clear()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                if not isinstance(exit_.code, int | None):
                    print(exit_.code, file=sys.stderr)
            except Exception:  # noqa: BLE001 - as the interpreter does: print it, exit 1
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


# Settings that make a CLI run take seconds: the small net, a few batches, no progress bar.
FAST = [
    "model=cudaconvnet_18pct",
    "data.batch_size=50",
    "data.eval_batch_size=50",
    "data.val_size=100",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "~callbacks.rich_progress_bar",
]


@contextmanager
def hydra_task(config_name: str, overrides: list[str], run_dir: Path) -> Iterator[DictConfig]:
    """A console script's composed config, in this process, as Hydra hands it to the task function of a single run
    whose dir is ``run_dir`` (call ``train``/``predict`` with it: no subprocess, no 5-7 s of imports)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from alexnet_lab.cli import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="alexnet_lab.conf", version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=without_local(overrides), return_hydra_config=True)
            with read_write(cfg.hydra), open_dict(cfg.hydra):
                cfg.hydra.runtime.output_dir = str(run_dir)
                cfg.hydra.runtime.cwd = str(run_dir.parent)
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
            run_dir.mkdir(parents=True, exist_ok=True)
            yield cfg
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def composed():
    """Compose train.yaml with overrides in this process, as the console script would (no subprocess); Hydra's
    config is set as in a run, so code that reads it (``HydraConfig.get()``) works."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from alexnet_lab.cli import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="alexnet_lab.conf", version_base="1.3"):

        def compose_with(*overrides: str):
            cfg = compose(config_name="train", overrides=without_local(overrides), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            return cfg

        yield compose_with
    GlobalHydra.instance().clear()
