"""alexnet-train and alexnet-eval end to end, through the installed console scripts, on generated data."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, isolated_env, run_cli, write_batches, write_tree
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from alexnet_lab.runs import TRAIN_FIGURES, VAL_FIGURES


def run_dirs(logs: Path, task: str = "train") -> list[Path]:
    return sorted(p.parent for p in (logs / task).glob("runs/*/.hydra"))


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 3-epoch run of cudaconvnet_18pct on generated official batches, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("trained")
    write_batches(tmp / "data" / "cifar10", n_train=1000, n_test=200)
    env = isolated_env(tmp)
    args = [*FAST, "trainer.max_epochs=3", "optimizer=adam", "seed=0", "logger=[tensorboard,csv]"]
    proc = run_cli("alexnet-train", *args, env=env, cwd=tmp)
    (run_dir,) = run_dirs(tmp / "logs")
    return {"env": env, "tmp": tmp, "run_dir": run_dir, "proc": proc, "args": args}


def test_metrics_json(trained: dict) -> None:
    record = json.loads((trained["run_dir"] / "metrics.json").read_text())
    assert record["status"] == "finished" and record["seed"] == 0
    assert record["epochs"] == 3 and record["steps"] == 3 * (900 // 50)
    assert set(record["final"]) >= {
        "train/loss", "train/top1_err", "val/loss", "val/top1_err", "val/top5_err", "val/top1_err_best",
        "test/loss", "test/top1_err", "test/top5_err",
    }  # fmt: skip
    assert set(record["final"]) >= {*VAL_FIGURES, *TRAIN_FIGURES}  # what a search of such runs may optimise
    for key, value in record["final"].items():
        if key.endswith(("_err", "_err_best")):
            assert 0.0 <= value <= 100.0, key
    assert record["final"]["val/top1_err_best"] == pytest.approx(record["best"]["val/top1_err"], abs=1e-4)
    assert record["final"]["val/top1_err_best"] <= record["final"]["val/top1_err"] + 1e-6
    assert record["best"]["ckpt_path"].endswith(".ckpt") and Path(record["best"]["ckpt_path"]).is_file()
    assert record["config"]["model"]["_target_"] == "alexnet_lab.models.CudaConvnet18pct"
    assert record["config"]["optimizer"]["_target_"] == "torch.optim.Adam"
    assert record["overrides"] == [*trained["args"], "~local"]  # the tests leave this machine's local config out
    assert record["seconds"] > 0 and record["versions"]["torch"]
    # the generated classes are separable by colour: three epochs must beat chance (90 %) by far
    assert record["final"]["test/top1_err"] < 50.0


def test_run_dir_keeps_config_overrides_and_checkpoints(trained: dict) -> None:
    run_dir = trained["run_dir"]
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "optimizer=adam" in overrides and "seed=0" in overrides
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "CudaConvnet18pct" in config and "seed: 0" in config
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in names and any(n.startswith("epoch") for n in names)
    csv = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert "val/top1_err" in csv[0]


def test_loss_decreases_and_tensorboard_has_every_tag(trained: dict) -> None:
    acc = events(trained["run_dir"])
    scalars = set(acc.Tags()["scalars"])
    assert scalars >= {
        "train/loss", "train/top1_err", "val/loss", "val/top1_err", "val/top5_err", "val/top1_err_best",
        "test/loss", "test/top1_err", "test/top5_err", "train/lr",
        "lrn/rnorm1/divisor_median", "lrn/rnorm1/divisor_p99", "lrn/rnorm2/divisor_p99",
    }  # fmt: skip
    assert "epoch" not in scalars and "step" not in scalars  # the x axis is the epoch, not a curve of its own
    train_loss = [e.value for e in acc.Scalars("train/loss")]
    assert len(train_loss) == 3 and train_loss[-1] < train_loss[0] * 0.8
    # every curve against epochs trained, whatever the batch size: 1, 2, 3; the test at the 3 epochs it trained
    for tag in ("train/loss", "val/top1_err", "train/lr", "lrn/rnorm1/divisor_p99"):
        assert [e.step for e in acc.Scalars(tag)] == [1, 2, 3], tag
    assert [e.step for e in acc.Scalars("test/top1_err")] == [3]
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([1e-3] * 3)  # a weight's rate (biases: 2x)
    divisors = [e.value for e in acc.Scalars("lrn/rnorm1/divisor_p99")]  # one point per epoch, never below k^beta = 1
    assert len(divisors) == 3 and min(divisors) >= 1.0
    best = [e.value for e in acc.Scalars("val/top1_err_best")]
    assert best == sorted(best, reverse=True) and len(best) == 3  # a running minimum, one point per epoch
    # Figure 3: one conv1 filter grid per epoch, 32 filters of 5x5 in a 16-wide grid
    images = acc.Images("conv1_filters")
    assert len(images) == 3 and images[-1].width == 16 * 6 + 1 and images[-1].height == 2 * 6 + 1


def test_hparams_tab_lists_real_final_metrics(trained: dict) -> None:
    acc = events(trained["run_dir"])
    content = acc.PluginTagToContent("hparams")
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in exp.metric_infos] == ["val/top1_err", "val/top5_err", "test/top1_err", "test/top5_err"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = start.hparams
    assert sorted(hp) == sorted(["run", "tags", "model", "norm", "pool", "activation", "dropout", "optimizer", "lr",
                                 "batch_size", "seed", "budget", "max_epochs"])  # fmt: skip
    assert hp["run"].string_value == trained["run_dir"].name  # readable, not the path TensorBoard cuts
    assert (hp["model"].string_value, hp["norm"].string_value, hp["optimizer"].string_value) == (
        "CudaConvnet18pct", "rnorm", "Adam")  # fmt: skip
    assert hp["seed"].number_value == 0 and hp["lr"].number_value == pytest.approx(1e-3)
    assert hp["batch_size"].number_value == 50 and hp["max_epochs"].number_value == 3
    # the columns the tab shows before any is ticked: those marked as differing, then the rest by name
    shown = sorted(exp.hparam_infos, key=lambda info: (not info.differs, info.name))[:5]
    assert [info.name for info in shown][:4] == ["lr", "model", "run", "seed"]  # (no experiment= in this run)
    # the values the tab shows are the last points of those scalar tags: the real final metrics
    record = json.loads((trained["run_dir"] / "metrics.json").read_text())
    for tag in ("val/top1_err", "test/top1_err", "test/top5_err"):
        assert acc.Scalars(tag)[-1].value == pytest.approx(record["final"][tag], abs=1e-4)


def test_eval_reproduces_the_train_time_test_metrics(trained: dict) -> None:
    record = json.loads((trained["run_dir"] / "metrics.json").read_text())
    ckpt = record["best"]["ckpt_path"]
    proc = run_cli(
        "alexnet-eval", f"ckpt_path={ckpt}", "trainer.accelerator=cpu", env=trained["env"], cwd=trained["tmp"]
    )
    (eval_dir,) = run_dirs(trained["tmp"] / "logs", "eval")
    said = proc.stdout + proc.stderr
    assert f"run dir: {eval_dir}" in said and f"done: {eval_dir}" in said
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    assert evaluated["status"] == "finished" and evaluated["ckpt_path"] == ckpt
    assert evaluated["ckpt_sha256"] == hashlib.sha256(Path(ckpt).read_bytes()).hexdigest()  # the report matches on it
    # the LRN divisors too: the same weights, test images and (seeded) sample of positions as the train-time test
    for key in (
        "test/loss",
        "test/top1_err",
        "test/top5_err",
        "test/lrn/rnorm1/divisor_p99",
        "test/lrn/rnorm2/divisor_median",
    ):
        assert evaluated["final"][key] == pytest.approx(record["final"][key], abs=1e-5), key
    assert evaluated["final"]["test/lrn/rnorm1/divisor_p99"] > 1.0
    assert evaluated["config"]["model"] == record["config"]["model"]


def test_eval_refuses_data_with_another_class_count(trained: dict) -> None:
    record = json.loads((trained["run_dir"] / "metrics.json").read_text())
    three = write_tree(trained["tmp"] / "three-classes", n_train=30, n_test=30, classes=3)
    args = [f"ckpt_path={record['best']['ckpt_path']}", f"data.path={three}", f"data.cache_dir={trained['tmp']}/c3"]
    proc = run_cli("alexnet-eval", *args, env=trained["env"], cwd=trained["tmp"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: data has 3 classes, data.num_classes is 10; fix one, or set data.num_classes=null to follow the data"
    )


def test_eval_refuses_a_missing_checkpoint(trained: dict) -> None:
    proc = run_cli("alexnet-eval", "ckpt_path=/nonexistent/x.ckpt", env=trained["env"], cwd=trained["tmp"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: checkpoint /nonexistent/x.ckpt does not exist")


@pytest.mark.slow
def test_multirun_with_seeds_and_same_second_runs_never_collide(cli_env: dict, tmp_path: Path) -> None:
    write_batches(tmp_path / "data" / "cifar10", n_train=300, n_test=50)
    base = [*FAST, "trainer.max_epochs=1", "data.val_size=50", "trainer.limit_train_batches=2"]
    exe = str(Path(sys.executable).with_name("alexnet-train"))
    # two single runs started together (same second: one in a process, one in this one) and a multirun
    procs = [
        subprocess.Popen(
            [exe, *base, "seed=0"], env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    ]
    run_cli("alexnet-train", *base, "seed=0", env=cli_env, cwd=tmp_path)
    # the multirun through the joblib launcher: its worker processes resolve their run dirs with our resolvers
    multi = run_cli("alexnet-train", "experiment=tutorial_cifar10", *base, "-m", "seed=1,2", "hydra/launcher=parallel",
                    env=cli_env, cwd=tmp_path, process=True)  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    singles = run_dirs(tmp_path / "logs")
    assert len(singles) == 2 and singles[0] != singles[1]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in singles)
    assert a["final"] == b["final"]  # seed=0 twice: the same numbers (seed 0 is a real seed)
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    jobs = sorted(p.parent.name for p in sweep.glob("*/.hydra"))
    assert jobs == ["0_seed-1", "1_seed-2"], multi.stdout[-1000:]
    assert f"sweep dir: {sweep} (alexnet-report {sweep} when it is done)" in multi.stdout  # said at the start
    seeds = [json.loads((sweep / j / "metrics.json").read_text())["seed"] for j in jobs]
    assert seeds == [1, 2]
    assert "LeafSpec" not in multi.stderr  # the workers are as quiet as the entry point
    cfg = json.loads((sweep / jobs[0] / "metrics.json").read_text())["config"]
    assert cfg["optimizer"]["_target_"] == "torch.optim.Adam" and cfg["data"]["val_size"] == 50


def test_no_seed_draws_one_and_records_it(cli_env: dict, tmp_path: Path) -> None:
    write_batches(tmp_path / "data" / "cifar10", n_train=200, n_test=50)
    run_cli("alexnet-train", *FAST, "trainer.max_epochs=1", "data.val_size=50", "test=false", env=cli_env, cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path / "logs")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert isinstance(record["seed"], int) and 0 <= record["seed"] < 2**31
    # the checkpoint carries the drawn seed too, so a resume reuses it
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["run_config"]["seed"] == record["seed"]
    assert not any(k.startswith("test/") for k in record["final"])


def test_a_machines_local_config_says_where_the_data_is(tmp_path: Path) -> None:
    """No ALEXNET_CIFAR10 and no data/ beside the command: a local/default.yaml (conf/local/, git-ignored, or any
    folder on hydra.searchpath) names the data once per machine; without it the error says where to put it."""
    data = write_batches(tmp_path / "elsewhere" / "cifar", n_train=200, n_test=50)
    env = isolated_env(tmp_path)
    env.pop("ALEXNET_CIFAR10", None)
    missing = run_cli("alexnet-train", *FAST, "trainer.max_epochs=1", env=env, cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "set data.path (once per machine: conf/local/default.yaml, or ALEXNET_CIFAR10)" \
        in missing.stderr.strip().splitlines()[-1]  # fmt: skip
    local = tmp_path / "machine" / "local"
    local.mkdir(parents=True)
    # named, so that this machine's own conf/local/default.yaml (which comes first on the search path) cannot shadow it
    (local / "machine.yaml").write_text(f"# @package _global_\ndata:\n  path: {data}\n")
    run_cli("alexnet-train", *FAST, "trainer.max_epochs=1", f"hydra.searchpath=[file://{local.parent}]", "local=machine",
            "name=local", env=env, cwd=tmp_path)  # fmt: skip
    (run,) = (tmp_path / "logs" / "train" / "runs").glob("*_local")
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "finished" and record["config"]["data"]["path"] == str(data)


@pytest.mark.parametrize("logger", ["csv", "wandb", "mlflow"])
def test_each_optional_logger_records_the_run(logger: str, tmp_path: Path) -> None:
    """logger=<name> beside TensorBoard: the final validation error reaches each one as metrics.json has it."""
    pytest.importorskip({"csv": "csv", "wandb": "wandb", "mlflow": "mlflow"}[logger])
    write_batches(tmp_path / "data" / "cifar10", n_train=200, n_test=50)
    env = isolated_env(tmp_path, WANDB_SILENT="true", WANDB_MODE="offline", MLFLOW_ALLOW_FILE_STORE="true")
    # W&B keeps one run and a service per process: in a process of its own, as a user's command has (in the test
    # process, after the rest of the suite, its offline file came out without the logged history)
    run_cli("alexnet-train", *FAST, "trainer.max_epochs=2", f"logger=[tensorboard,{logger}]", "name=logged",
            "extras.print_config=false", env=env, cwd=tmp_path, process=logger == "wandb")  # fmt: skip
    (run,) = (tmp_path / "logs" / "train" / "runs").glob("*_logged")
    want = json.loads((run / "metrics.json").read_text())["final"]["val/top1_err"]
    if logger == "csv":
        rows = [r.split(",") for r in (run / "csv" / "metrics.csv").read_text().splitlines()]
        column = rows[0].index("val/top1_err")
        got = [float(r[column]) for r in rows[1:] if r[column]]
    elif logger == "wandb":
        (offline,) = (run / "wandb").glob("offline-run-*/run-*.wandb")  # synced later with `wandb sync`
        records = offline.read_bytes()  # wandb's record log: each value as JSON text beside its key
        assert b"val/top1_err" in records and json.dumps(want).encode() in records
        got = [want]
    else:
        (series,) = (tmp_path / "logs" / "mlflow").glob("*/*/metrics/val/top1_err")
        got = [float(line.split()[1]) for line in series.read_text().splitlines()]
        assert [int(line.split()[2]) for line in series.read_text().splitlines()] == [1, 2]  # against epochs
    assert got[-1] == pytest.approx(want, abs=1e-4)


def test_a_missing_optional_plugin_names_its_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "optuna" in name else real(name, *a))
    proc = run_cli("alexnet-train", "-m", "hparams_search=cudaconvnet_optuna", env=isolated_env(tmp_path),
                   cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: hparams_search=cudaconvnet_optuna needs hydra_optuna_sweeper: pip install 'alexnet-lab[hparams-search]' "
        "(in the checkout: pip install -e '.[hparams-search]')"
    )


def test_debug_runs_go_apart_and_say_they_saw_a_subset(tmp_path: Path) -> None:
    """debug=limit lands in logs/debug/ (not among results) and metrics.json names the limits; fast_dev_run leaves
    no checkpoint; tags=[...] and callbacks=none work as in lightning-hydra-template; extras print the config."""
    write_batches(tmp_path / "data" / "cifar10", n_train=300, n_test=60)
    env = isolated_env(tmp_path)
    proc = run_cli("alexnet-train", "model=cudaconvnet_18pct", "data.val_size=50", "debug=limit", "tags=[lrn,first-try]", env=env,
                   cwd=tmp_path)  # fmt: skip
    (run,) = (tmp_path / "logs" / "debug" / "runs").iterdir()
    assert not (tmp_path / "logs" / "train").exists()
    record = json.loads((run / "metrics.json").read_text())
    assert record["subset"] == {"limit_train_batches": 10, "limit_val_batches": 3, "limit_test_batches": 3}
    assert record["tags"] == ["lrn", "first-try"]
    assert "config" in proc.stdout and "_target_: alexnet_lab.models.CudaConvnet18pct" in proc.stdout  # the tree
    assert f"run dir: {run}" in proc.stdout + proc.stderr and f"done: {run}" in proc.stdout + proc.stderr
    run_cli(
        "alexnet-train",
        "model=cudaconvnet_18pct",
        "data.val_size=50",
        "debug=fast_dev_run",
        "name=dev",
        env=env,
        cwd=tmp_path,
    )
    (dev,) = (tmp_path / "logs" / "debug" / "runs").glob("*_dev")
    assert json.loads((dev / "metrics.json").read_text())["subset"] == {"fast_dev_run": True}
    assert not list(dev.glob("checkpoints/*.ckpt"))
    plain = [a for a in FAST if "callbacks" not in a]
    run_cli("alexnet-train", *plain, "trainer.max_epochs=1", "callbacks=none", "name=bare", "extras.print_config=false",
            env=env, cwd=tmp_path)  # fmt: skip
    (bare,) = (tmp_path / "logs" / "train" / "runs").glob("*_bare")
    record = json.loads((bare / "metrics.json").read_text())
    assert record["status"] == "finished" and record["subset"] == {}
    assert not any(k.startswith("lrn/") for k in record["final"])  # none of ours ran (the LRN monitor is one)
    assert not (bare / "checkpoints" / "last.ckpt").exists()  # only Lightning's own default checkpoint
    bad = run_cli("alexnet-train", *FAST, "tags=lrn", env=env, cwd=tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: tags='lrn': give a list, e.g. tags=[lrn,first-try]"
    )


def test_a_cuda_convnet_model_alone_learns_in_its_input_units(tmp_path: Path) -> None:
    """``model=cudaconvnet_18pct`` without its experiment: the data feeds the 0-255 pixels less the mean image its
    init was calibrated for (its model config says so), and 150 SGD steps at cuda-convnet's epsW learn. Measured
    (2 cores, seed 0, these settings): train loss 0.12 after 5 epochs; fed standardized inputs as before, 2.3018
    (ln 10: nothing learned). The default optimizer.lr=0.01 is ten times epsW and diverged in one of two runs."""
    write_batches(tmp_path / "data" / "cifar10", n_train=1000, n_test=200)
    run_cli("alexnet-train", "model=cudaconvnet_18pct", "optimizer.lr=0.001", "data.val_size=200", "data.batch_size=32",
            "trainer.max_epochs=6", "trainer.accelerator=cpu", "trainer.enable_model_summary=false",
            "~callbacks.rich_progress_bar", "seed=0", "test=false", env=isolated_env(tmp_path), cwd=tmp_path)  # fmt: skip
    (run,) = run_dirs(tmp_path / "logs")
    record = json.loads((run / "metrics.json").read_text())
    assert record["config"]["data"]["mean"] == "pixel" and record["config"]["data"]["std"] == pytest.approx(1 / 255)
    assert record["steps"] == 6 * (800 // 32) and record["final"]["train/loss"] < 1.0
