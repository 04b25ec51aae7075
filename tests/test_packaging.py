"""A plain (non-editable) install ships conf/ inside the package and runs outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, write_batches


@pytest.mark.slow
def test_wheel_ships_the_configs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("alexnet_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for conf in (
        "train.yaml",
        "eval.yaml",
        "model/alexnet.yaml",
        "data/cifar10.yaml",
        "experiment/tutorial_cifar10.yaml",
    ):
        assert f"alexnet_lab/conf/{conf}" in names, conf
    assert any(n.endswith("entry_points.txt") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "alexnet-train = alexnet_lab.train:main" in entry_points

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    write_batches(elsewhere / "data" / "cifar10", n_train=100, n_test=20)
    env = {k: v for k, v in os.environ.items() if k not in ("ALEXNET_CIFAR10", "ALEXNET_LOG_DIR", "ALEXNET_DATA_DIR")}
    env["PYTHONPATH"] = str(target)
    code = (
        "import sys, alexnet_lab; assert alexnet_lab.__file__.startswith(sys.argv[1]), alexnet_lab.__file__; "
        "sys.argv = ['alexnet-train', 'model=cudaconvnet_18pct', 'debug=fast_dev_run', 'data.val_size=20', 'trainer.accelerator=cpu']; "
        "from alexnet_lab.train import main; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test/top1_err" in proc.stdout
    # runs go to logs/ under the directory the command was started in (debug runs to logs/debug)
    assert list((elsewhere / "logs" / "debug" / "runs").glob("*/metrics.json"))


@pytest.mark.slow
def test_importing_the_package_has_no_side_effects() -> None:
    """Tests and notebooks import the package freely: no resolver registered, no run id decided or exported."""
    code = (
        "import os; from omegaconf import OmegaConf; import alexnet_lab, alexnet_lab.cli, alexnet_lab.runs as runs, alexnet_lab.report;"
        "import alexnet_lab.module, alexnet_lab.data, alexnet_lab.models, alexnet_lab.errors, alexnet_lab.checkpointing;"
        "assert not OmegaConf.has_resolver('run_dir_for') and not OmegaConf.has_resolver('run_id');"
        "assert 'ALEXNET_RUN_ID' not in os.environ and runs._run_id is None; print('clean')"
    )
    env = {k: v for k, v in os.environ.items() if k != "ALEXNET_RUN_ID"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.stdout.strip() == "clean", proc.stderr[-2000:]


@pytest.mark.slow
def test_importing_every_module_has_no_side_effect(tmp_path: Path) -> None:
    """Every module of the package, the console scripts' entry modules among them, imports in a fresh process
    without touching signals, writing files or setting our warnings filters: what a script does happens when it
    runs, not when someone imports it (a notebook, a test, a joblib worker). The one deliberate exception: the
    train module registers the configs' resolvers (a joblib worker imports it to unpickle the task, and resolves
    its job's dir before the task runs); only the entry modules that import it do, no other module."""
    code = """
import importlib, json, pkgutil, signal, sys, warnings
from importlib.metadata import entry_points
from omegaconf import OmegaConf
import alexnet_lab
filters, handlers = list(warnings.filters), {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
names = [m.name for m in pkgutil.walk_packages(alexnet_lab.__path__, "alexnet_lab.") if ".conf" not in m.name]
registered_by = {}
entry = ("alexnet_lab.eval", "alexnet_lab.predict", "alexnet_lab.train")  # those that import the train module
for name in sorted(names, key=lambda n: n in entry):  # the rest first
    importlib.import_module(name)
    for r in ("run_id", "swept", "run_dir_for", "hydra_subdir_for", "cwd"):
        if OmegaConf.has_resolver(r):
            registered_by.setdefault(r, name)
scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.value.startswith("alexnet_lab")}
for ep in entry_points(group="console_scripts"):
    if ep.value.startswith("alexnet_lab"):
        assert callable(ep.load()), ep.value
print(json.dumps({
    "modules": names, "scripts": scripts,
    "registered_by": registered_by,
    # ours, had an import run them: the config's ignore_warnings (ignore all) and quiet_upstream's treespec filter
    "our_filters": [str(f[1]) for f in warnings.filters if f not in filters
                    and (f[:2] == ("ignore", None) and f[2] is Warning or "treespec" in str(f[1]))],
    "signals_changed": {s.name: signal.getsignal(s) is not h for s, h in handlers.items()},
}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"alexnet_lab.train", "alexnet_lab.eval", "alexnet_lab.predict", "alexnet_lab.report", "alexnet_lab.cli",
            "alexnet_lab.runs", "alexnet_lab.models.alexnet", "alexnet_lab.data.cifar10"} <= set(found["modules"])  # fmt: skip
    assert found["scripts"] == {
        "alexnet-train": "alexnet_lab.train:main",
        "alexnet-eval": "alexnet_lab.eval:main",
        "alexnet-report": "alexnet_lab.report:main",
        "alexnet-predict": "alexnet_lab.predict:main",
    }
    entry = {"alexnet_lab.eval", "alexnet_lab.predict", "alexnet_lab.train"}
    assert len(found["registered_by"]) == 5 and set(found["registered_by"].values()) <= entry
    assert found["our_filters"] == []
    assert found["signals_changed"] == {"SIGINT": False, "SIGTERM": False}
    assert list(tmp_path.iterdir()) == []  # nothing written where it was imported
