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

from alexnet_lab.module import Classifier
from alexnet_lab.report import build_report, to_markdown


def failing_training_step(real_step):
    """Classifier.training_step that fails the (tanh, seed 2) job of the sweep."""

    def training_step(self, batch, batch_idx):
        config = self.hparams.run_config
        if config["seed"] == 2 and config["model"]["activation"] == "tanh":
            raise RuntimeError("injected failure for the report test")
        return real_step(self, batch, batch_idx)

    return training_step


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """activation_ablation, 2 variants x 2 seeds on generated data, the (tanh, seed 2) job made to fail."""
    tmp = tmp_path_factory.mktemp("sweep")
    write_batches(tmp / "data" / "cifar10", n_train=1000, n_test=200)
    env = isolated_env(tmp)
    args = ["-m", "experiment=activation_ablation", *FAST, "trainer.max_epochs=3", "optimizer.lr=0.004",
            "seed=1,2", "callbacks.milestone_stop.below=80", "callbacks.milestone_stop.window_images=200"]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Classifier, "training_step", failing_training_step(Classifier.training_step))
        proc = run_cli("alexnet-train", *args, env=env, cwd=tmp)
    (folder,) = (tmp / "logs" / "train" / "multiruns").iterdir()
    assert "injected failure for the report test" in proc.stdout + proc.stderr  # logged, and the sweep went on
    return folder


def jobs(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/metrics.json")}


def test_sweep_goes_on_after_a_failed_job(sweep: Path) -> None:
    records = jobs(sweep)
    assert sorted(records) == [
        "0_model.activation-relu_optimizer.lr-0.004_seed-1",
        "1_model.activation-relu_optimizer.lr-0.004_seed-2",
        "2_model.activation-tanh_optimizer.lr-0.004_seed-1",
        "3_model.activation-tanh_optimizer.lr-0.004_seed-2",
    ]
    assert [r["status"] for _, r in sorted(records.items())] == ["finished", "finished", "finished", "failed"]
    assert (
        records["3_model.activation-tanh_optimizer.lr-0.004_seed-2"]["error"]
        == "RuntimeError: injected failure for the report test"
    )


def test_report_rows_counts_and_means(sweep: Path) -> None:
    records = jobs(sweep)
    markdown = (sweep / "report.md").read_text()  # written by the Hydra callback at the end of the multirun
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")
        for line in markdown.splitlines()
        if line.startswith("| model.")
    }
    relu_row, tanh_row = (
        "model.activation=relu, optimizer.lr=0.004 (baseline)",
        "model.activation=tanh, optimizer.lr=0.004",
    )
    assert list(rows) == [relu_row, tanh_row]
    assert rows[relu_row][1] == "2 / 2" and rows[tanh_row][1] == "1 / 2"
    relu = [
        records[f"{i}_model.activation-relu_optimizer.lr-0.004_seed-{i + 1}"]["final"]["test/top1_err"] for i in (0, 1)
    ]
    assert rows[relu_row][2] == f"{statistics.fmean(relu):.2f} ± {statistics.stdev(relu):.2f}"
    tanh = records["2_model.activation-tanh_optimizer.lr-0.004_seed-1"]["final"]["test/top1_err"]
    assert rows[tanh_row][2] == f"{tanh:.2f}"  # one finished seed: no spread
    assert rows[tanh_row][6] == f"{tanh - statistics.fmean(relu):+.2f}"  # Δ without an interval (n=1)
    assert (
        "`3_model.activation-tanh_optimizer.lr-0.004_seed-2`: RuntimeError: injected failure for the report test"
        in markdown
    )
    assert "six times faster" in markdown  # the paper's claim stands beside the table
    assert "epochs to train/top1_err ≤ 80" in markdown  # the milestone the runs raced to
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
        "dataset imagenet. Errors in percent on the ILSVRC-2012 val split (test/*: evaluated once at the end) "
        "(10-crop, softmax averaged) and the minival (val/*: held out of train) (centre crop)" in markdown
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
    relu5 = [
        records[f"{i}_model.activation-relu_optimizer.lr-0.004_seed-{i + 1}"]["final"]["test/top5_err"] for i in (0, 1)
    ]
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
    assert "| model.activation=relu, optimizer.lr=0.004 (baseline) | 2 / 2 |" in proc.stdout
    assert (copy / "report.md").read_text() in proc.stdout
    missing = run_cli("alexnet-report", str(tmp_path / "nope"), env=cli_env, check=False)
    assert missing.returncode == 2 and missing.stderr.startswith(f"error: {tmp_path}/nope is not a directory")


def test_milestone_stop_records_when_and_stops(sweep: Path) -> None:
    records = jobs(sweep)
    relu = [records[f"{i}_model.activation-relu_optimizer.lr-0.004_seed-{i + 1}"] for i in (0, 1)]
    for record in relu:  # the 200-image windows of 900 training images: reached within the 3 epochs, then stopped
        epochs = record["final"]["milestone/epochs"]
        assert 0 < epochs <= 3 and record["final"]["milestone/seconds"] > 0
        assert record["epochs"] == max(
            1, math.ceil(epochs)
        )  # stops in the epoch it got there (not before epoch 1 ends)
    assert build_report(sweep).rows[0].milestones == [(r["final"]["milestone/epochs"], True) for r in relu]


@pytest.mark.slow
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
    assert "| model.activation=tanh, optimizer.lr=0.004 | 1 / 2 |" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the bar chart and the learning curves


def test_optuna_search_minimises_the_returned_metric(cli_env: dict, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    write_batches(tmp_path / "data" / "cifar10", n_train=300, n_test=50)
    args = ["-m", "hparams_search=cudaconvnet_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=1",
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


# ------------------------------------------------------------------------------------ constructed sweeps


def fake_sweep(root: Path, ablation: dict, jobs: list[tuple[dict, dict, int]], budget: str = "paper") -> Path:
    """A sweep dir as alexnet-train leaves it: per job .hydra/{overrides,config}.yaml and metrics.json."""
    from omegaconf import OmegaConf

    keys = sorted({k for overrides, _, _ in jobs for k in overrides})
    params = {k: ",".join(dict.fromkeys(str(o[k]) for o, _, _ in jobs)) for k in keys}
    OmegaConf.save({"hydra": {"sweeper": {"params": params}, "overrides": {"task": []}}}, root / "multirun.yaml")
    for number, (overrides, final, epochs) in enumerate(jobs):
        job = root / (f"{number}_" + ",".join(f"{k}={v}" for k, v in overrides.items()))
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save([f"{k}={v}" for k, v in overrides.items()], job / ".hydra" / "overrides.yaml")
        config = {"data": {"_target_": "alexnet_lab.data.CIFAR10DataModule"}, "ablation": ablation, "budget": budget}
        OmegaConf.save(config, job / ".hydra" / "config.yaml")
        record = {
            "status": "finished",
            "seed": int(overrides["seed"]),
            "final": final,
            "epochs": epochs,
            "seconds": 1.0,
        }
        (job / "metrics.json").write_text(json.dumps(record))
    return root


LRN_CLAIM = {
    "name": "lrn",
    "baseline": {"model": "base"},
    "budgets": {"small": 3, "paper": 140},
    "claims": {"cifar10": {"top1": 1.0, "text": "one point"}},
}


@pytest.mark.parametrize(
    "shift, label",
    [([1.0, 1.1, 0.9, 1.05], "agrees"), ([0.02, -0.03, 0.01, 0.0], "no effect"), ([3.0, 3.1, 2.9, 3.05], "larger"),
     ([-1.0, 2.5, 0.1, 3.0], "inconclusive")],
)  # fmt: skip
def test_report_verdicts_on_constructed_sweeps(tmp_path: Path, shift: list[float], label: str) -> None:
    base = [18.0, 19.2, 17.5, 18.4]
    jobs = [
        ({"model": "base", "seed": s + 1}, {"test/top1_err": e, "test/top5_err": 2.0}, 140) for s, e in enumerate(base)
    ]
    jobs += [({"model": "none", "seed": s + 1}, {"test/top1_err": e + d, "test/top5_err": 2.0}, 140)
             for s, (e, d) in enumerate(zip(base, shift))]  # fmt: skip
    report = build_report(fake_sweep(tmp_path, LRN_CLAIM, jobs))
    (check,) = report.checks
    assert check.verdict.label == label and check.interval.method == "paired t" and check.interval.n == 4
    markdown = to_markdown(report)
    assert f"**model=none: {label}.** test top-1 error, variant - baseline (points)" in markdown
    assert (
        "Budget: paper (140 epochs per run; at most 140 epochs configured)." in markdown
        and "cannot decide" not in markdown
    )
    if label == "inconclusive":
        assert "seeds per variant would bring the interval's half-width under half the claim" in markdown


def test_small_budget_says_first_that_it_cannot_decide(tmp_path: Path) -> None:
    jobs = [
        ({"model": m, "seed": s}, {"test/top1_err": 40.0 + s + (m == "none")}, 3)
        for m in ("base", "none")
        for s in (1, 2, 3)
    ]
    report = build_report(fake_sweep(tmp_path, LRN_CLAIM, jobs, budget="small"))
    markdown = to_markdown(report)
    assert markdown.splitlines()[0] == "# Ablation: lrn (small budget: cannot decide the paper's claims)"
    assert markdown.splitlines()[2].startswith(
        "**Small budget (3 epochs per run): this sweep cannot decide the paper's claims.**"
    )
    assert "`budget=paper` (140 epochs per run" in markdown
    assert (
        report.checks[0].verdict.label == "not decided"
        and "(agrees with the paper here)" in report.checks[0].verdict.sentence
    )


ACTIVATION = {
    "name": "activation",
    "baseline": {"model.activation": "relu"},
    "tune": ["optimizer.lr"],
    "milestone": {"metric": "train/top1_err", "below": 25.0},
    "budgets": {"small": 3, "paper": 100},
    "claims": {"cifar10": {"speedup": 6.0, "text": "six times faster"}},
}


def activation_jobs(tanh_epochs: dict[str, list[float | None]]) -> list[tuple[dict, dict, int]]:
    """ReLU reaches the milestone in 5 epochs at lr 0.002 and 8 at 0.001; tanh as given (None: never, cap 100)."""
    jobs = []
    for lr, epochs in (("0.001", [8.0, 8.2, 7.9]), ("0.002", [5.0, 5.2, 4.9])):
        jobs += [({"model.activation": "relu", "optimizer.lr": lr, "seed": s + 1}, {"milestone/epochs": e}, math.ceil(e))
                 for s, e in enumerate(epochs)]  # fmt: skip
    for lr, epochs in tanh_epochs.items():
        for s, e in enumerate(epochs):
            final = {} if e is None else {"milestone/epochs": e}
            jobs.append(
                (
                    {"model.activation": "tanh", "optimizer.lr": lr, "seed": s + 1},
                    final,
                    100 if e is None else math.ceil(e),
                )
            )
    return jobs


def test_activation_ratio_takes_each_activations_fastest_rate(tmp_path: Path) -> None:
    report = build_report(
        fake_sweep(tmp_path, ACTIVATION, activation_jobs({"0.001": [31.0, 29.5, 30.4], "0.002": [40.0, 41.0, 39.0]}))
    )
    relu, tanh = report.rows
    assert relu.tuned == {"optimizer.lr": "0.002"} and tanh.tuned == {"optimizer.lr": "0.001"}
    (check,) = report.checks
    ratios = [31.0 / 5.0, 29.5 / 5.2, 30.4 / 4.9]
    assert math.exp(check.interval.estimate) == pytest.approx(math.exp(statistics.fmean(math.log(r) for r in ratios)))
    assert check.verdict.label == "agrees" and check.measured.startswith("6.")
    markdown = to_markdown(report)
    assert "- model.activation=tanh: optimizer.lr=0.001 (chosen): 30.3 epochs (3/3 reached)" in markdown
    assert "| model.activation=relu, optimizer.lr=0.002 (baseline) |" in markdown


def test_runs_that_never_reach_the_milestone_make_a_lower_bound(tmp_path: Path) -> None:
    report = build_report(fake_sweep(tmp_path, ACTIVATION, activation_jobs({"0.001": [60.0, None, 75.0]})))
    (check,) = report.checks
    assert check.lower_bound and check.measured.startswith("≥ ")
    assert check.verdict.label in ("inconclusive", "larger")
    markdown = to_markdown(report)
    assert "1 not in 100" in markdown  # the unreached run is counted, not dropped
    if check.verdict.label == "inconclusive":
        assert "1 of 3 runs did not reach the milestone within 100 epochs" in check.verdict.sentence


def test_the_budget_line_names_the_milestone_and_each_runs_own_cap(tmp_path: Path) -> None:
    """A milestone race trains a different number of epochs per run; a run resumed with a lower cap says so."""
    sweep = fake_sweep(tmp_path, ACTIVATION, activation_jobs({"0.001": [None, None, None]}))
    for record_file in sweep.glob("*tanh*/metrics.json"):
        record = json.loads(record_file.read_text())
        record.update(epochs=60, config={"trainer": {"max_epochs": 60}})
        record_file.write_text(json.dumps(record))
    lines = to_markdown(build_report(sweep)).splitlines()
    assert lines[2] == (
        "Budget: paper (a run stops when train/top1_err ≤ 25, at most 60 epochs (a run's own `trainer.max_epochs`; "
        "the budget sets 100); finished runs trained 5-60 epochs per run)."
    )


def test_rates_are_compared_on_the_seeds_they_all_ran(tmp_path: Path) -> None:
    """Stage 1 runs every rate on seed 1, stage 2 only the fastest on seeds 2 and 3: the choice stays with the
    rate that won on seed 1, though its later seeds are slower than another rate's single run."""
    jobs = [({"model.activation": "relu", "optimizer.lr": lr, "seed": 1}, {"milestone/epochs": e}, 8)
            for lr, e in (("0.002", 7.0), ("0.004", 7.1))]  # fmt: skip
    jobs += [({"model.activation": "relu", "optimizer.lr": "0.002", "seed": s}, {"milestone/epochs": 7.6}, 8)
             for s in (2, 3)]  # fmt: skip
    jobs += [({"model.activation": "tanh", "optimizer.lr": "0.008", "seed": s}, {"milestone/epochs": e}, 43)
             for s, e in ((1, 42.0), (2, 44.0), (3, 45.6))]  # fmt: skip
    report = build_report(fake_sweep(tmp_path, ACTIVATION, jobs))
    relu, tanh = report.rows
    assert relu.tuned == {"optimizer.lr": "0.002"} and len(relu.finished) == 3 and len(tanh.finished) == 3
    (check,) = report.checks
    assert check.interval.n == 3 and check.interval.method == "paired t"
    assert math.exp(check.interval.estimate) == pytest.approx((42.0 / 7.0 * 44.0 / 7.6 * 45.6 / 7.6) ** (1 / 3))
    markdown = to_markdown(report)
    assert "- model.activation=relu: optimizer.lr=0.002 (chosen): 7.0 epochs (1/1 reached, seed 1)" in markdown
    assert "- model.activation=relu: optimizer.lr=0.004: 7.1 epochs (1/1 reached, seed 1)" in markdown
