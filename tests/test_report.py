"""The ablation report: statistics against hand-computed values, and a real multirun with a failed job."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
from pathlib import Path

import pytest
from conftest import FAST, isolated_env, run_cli, write_batches
from PIL import Image

from alexnet_lab.report import build_report, mean_std, t_quantile, to_markdown, welch_interval


@pytest.mark.parametrize(
    "df, expected", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (10, 2.228139), (1000, 1.962339)]
)
def test_t_quantile(df: float, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-5)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-5)


def test_welch_interval_by_hand() -> None:
    # equal variances (1) and sizes (3): se = sqrt(1/3 + 1/3), Welch df = 4, t = 2.776445
    diff, lo, hi = welch_interval([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    half = 2.776445 * math.sqrt(2 / 3)
    assert diff == -1.0 and lo == pytest.approx(-1 - half, abs=1e-5) and hi == pytest.approx(-1 + half, abs=1e-5)
    assert mean_std([1.0, 2.0, 3.0, 6.0]) == (3.0, pytest.approx(statistics.stdev([1.0, 2.0, 3.0, 6.0])))
    assert math.isnan(welch_interval([1.0], [2.0, 3.0])[1])  # one seed: no interval


INJECT = """
import alexnet_lab.module as module

_step = module.Classifier.training_step


def training_step(self, batch, batch_idx):
    config = self.hparams.run_config
    if config["seed"] == 2 and config["model"]["activation"] == "tanh":
        raise RuntimeError("injected failure for the report test")
    return _step(self, batch, batch_idx)


module.Classifier.training_step = training_step
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """activation_ablation, 2 variants x 2 seeds on generated data, the (tanh, seed 2) job made to fail."""
    tmp = tmp_path_factory.mktemp("sweep")
    write_batches(tmp / "data" / "cifar10", n_train=1000, n_test=200)
    (tmp / "inject").mkdir()
    (tmp / "inject" / "sitecustomize.py").write_text(INJECT)
    env = isolated_env(tmp, PYTHONPATH=str(tmp / "inject"))
    args = ["-m", "experiment=activation_ablation", *FAST, "trainer.max_epochs=3", "optimizer=adam", "seed=1,2"]
    proc = run_cli("alexnet-train", *args, env=env, cwd=tmp)
    (folder,) = (tmp / "logs" / "train" / "multiruns").iterdir()
    assert "injected failure for the report test" in proc.stdout + proc.stderr  # logged, and the sweep went on
    return folder


def jobs(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/metrics.json")}


def test_sweep_goes_on_after_a_failed_job(sweep: Path) -> None:
    records = jobs(sweep)
    assert sorted(records) == [
        "0_model.activation=relu,seed=1",
        "1_model.activation=relu,seed=2",
        "2_model.activation=tanh,seed=1",
        "3_model.activation=tanh,seed=2",
    ]
    assert [r["status"] for _, r in sorted(records.items())] == ["finished", "finished", "finished", "failed"]
    assert records["3_model.activation=tanh,seed=2"]["error"] == "RuntimeError: injected failure for the report test"


def test_report_rows_counts_and_means(sweep: Path) -> None:
    records = jobs(sweep)
    markdown = (sweep / "report.md").read_text()  # written by the Hydra callback at the end of the multirun
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")
        for line in markdown.splitlines()
        if line.startswith("| model.")
    }
    assert list(rows) == ["model.activation=relu (baseline)", "model.activation=tanh"]
    assert rows["model.activation=relu (baseline)"][1] == "2 / 2" and rows["model.activation=tanh"][1] == "1 / 2"
    relu = [records[f"{i}_model.activation=relu,seed={i + 1}"]["final"]["test/top1_err"] for i in (0, 1)]
    assert rows["model.activation=relu (baseline)"][2] == f"{statistics.fmean(relu):.2f} ± {statistics.stdev(relu):.2f}"
    tanh = records["2_model.activation=tanh,seed=1"]["final"]["test/top1_err"]
    assert rows["model.activation=tanh"][2] == f"{tanh:.2f}"  # one finished seed: no spread
    assert rows["model.activation=tanh"][6] == f"{tanh - statistics.fmean(relu):+.2f}"  # Δ without an interval (n=1)
    assert "`3_model.activation=tanh,seed=2`: RuntimeError: injected failure for the report test" in markdown
    assert "six times faster" in markdown  # the paper's claim stands beside the table
    assert "epochs to train/top1_err ≤ 25" in markdown
    assert "on the test split (one view) and the validation split (one view)" in markdown  # CIFAR-10: no crops


def test_report_says_which_views_produced_imagenet_numbers(sweep: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    copy = tmp_path / "imagenet_sweep"
    shutil.copytree(sweep, copy)
    for config_file in copy.glob("*/.hydra/config.yaml"):
        config = OmegaConf.load(config_file)
        config.data = {
            "_target_": "alexnet_lab.data.ImageNetDataModule",
            "val_protocol": "center",
            "test_protocol": "ten_crop",
        }
        OmegaConf.save(config, config_file)
    markdown = to_markdown(build_report(copy))
    assert (
        "dataset imagenet. Errors in percent on the test split (10-crop, softmax averaged) and the validation split (centre crop)"
        in markdown
    )


def test_report_csv_png_and_tensorboard(sweep: Path) -> None:
    records = jobs(sweep)
    with open(sweep / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert [row["variant"] for row in table] == ["model.activation=relu", "model.activation=tanh"]
    assert [(row["finished"], row["started"], row["baseline"]) for row in table] == [
        ("2", "2", "True"),
        ("1", "2", "False"),
    ]
    relu5 = [records[f"{i}_model.activation=relu,seed={i + 1}"]["final"]["test/top5_err"] for i in (0, 1)]
    assert float(table[0]["test/top5_err_mean"]) == pytest.approx(statistics.fmean(relu5), abs=1e-6)
    assert float(table[0]["test/top5_err_std"]) == pytest.approx(statistics.stdev(relu5), abs=1e-6)
    with Image.open(sweep / "report.png") as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 200
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    text = EventAccumulator(str(sweep / "report"))
    text.Reload()
    assert "report/text_summary" in text.Tags()["tensors"]  # the markdown, in the TEXT tab
    variant = EventAccumulator(str(next((sweep / "report").glob("0_*"))))
    variant.Reload()
    assert "_hparams_/session_start_info" in variant.PluginTagToContent("hparams")
    assert variant.Scalars("mean/test/top1_err")[0].value == pytest.approx(
        float(table[0]["test/top1_err_mean"]), abs=1e-4
    )


def test_report_cli_on_a_copied_sweep(sweep: Path, tmp_path: Path, cli_env: dict) -> None:
    copy = tmp_path / "copied"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report*"))
    proc = run_cli("alexnet-report", str(copy), env=cli_env)
    assert "| model.activation=relu (baseline) | 2 / 2 |" in proc.stdout
    assert (copy / "report.md").read_text() in proc.stdout
    missing = run_cli("alexnet-report", str(tmp_path / "nope"), env=cli_env, check=False)
    assert missing.returncode == 2 and missing.stderr.startswith(f"error: {tmp_path}/nope is not a directory")


def test_milestone_epochs(sweep: Path) -> None:
    report = build_report(sweep)
    relu = report.rows[0]
    assert relu.milestone_reached == 2 and 1 <= relu.milestone[0] <= 3 and relu.milestone[1] > 0


def test_notebook_runs_headless(sweep: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "ablation_report.ipynb", as_version=4)
    os.environ["SWEEP_DIR"] = str(sweep)
    try:
        nbclient.NotebookClient(
            notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        del os.environ["SWEEP_DIR"]
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs) + "".join(
        o.get("data", {}).get("text/markdown", "") for o in outputs
    )
    assert f"sweep: {sweep}, 4 jobs, baseline: model.activation=relu" in text
    assert "| model.activation=tanh | 1 / 2 |" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the bar chart and the learning curves


def test_optuna_search_minimises_the_returned_metric(cli_env: dict, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    write_batches(tmp_path / "data" / "cifar10", n_train=300, n_test=50)
    args = ["-m", "hparams_search=convnet_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=1",
            "data.val_size=50", "trainer.max_epochs=1", "trainer.accelerator=cpu", "~callbacks.rich_progress_bar"]  # fmt: skip
    run_cli("alexnet-train", *args, env=cli_env, cwd=tmp_path)
    (folder,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    trials = [json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))]
    assert len(trials) == 2 and all(t["status"] == "finished" for t in trials)
    from omegaconf import OmegaConf

    results = OmegaConf.load(folder / "optimization_results.yaml")
    assert results.best_value == pytest.approx(min(t["final"]["val/top1_err_best"] for t in trials), abs=1e-4)
    assert 1e-3 <= results.best_params["optimizer.lr"] <= 0.1
    assert (folder / "report.md").exists()
