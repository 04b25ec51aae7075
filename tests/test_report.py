"""The ablation report: statistics against hand-computed values, and a real multirun with a failed job."""

from __future__ import annotations

import csv
import hashlib
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
            "seed=1,2", "callbacks.milestone_stop.below=80", "callbacks.milestone_stop.window_images=200",
            "ablation.tune=[]"]  # one rate: nothing to tune  # fmt: skip
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
        "1_model.activation-tanh_optimizer.lr-0.004_seed-1",
        "2_model.activation-relu_optimizer.lr-0.004_seed-2",
        "3_model.activation-tanh_optimizer.lr-0.004_seed-2",
    ]  # seed by seed: the experiment sweeps its seeds first
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
        "model.activation=relu,optimizer.lr=0.004 (baseline)",
        "model.activation=tanh,optimizer.lr=0.004",
    )
    assert list(rows) == [relu_row, tanh_row]
    assert rows[relu_row][1] == "2 / 2" and rows[tanh_row][1] == "1 / 2"
    relu = [
        records[f"{2 * i}_model.activation-relu_optimizer.lr-0.004_seed-{i + 1}"]["final"]["test/top1_err"]
        for i in (0, 1)
    ]
    assert rows[relu_row][2] == f"{statistics.fmean(relu):.2f} ± {statistics.stdev(relu):.2f}"
    tanh = records["1_model.activation-tanh_optimizer.lr-0.004_seed-1"]["final"]["test/top1_err"]
    assert rows[tanh_row][2] == f"{tanh:.2f}"  # one finished seed: no spread
    assert rows[tanh_row][6] == f"{tanh - statistics.fmean(relu):+.2f} (no interval)"  # n = 1
    assert (
        "`3_model.activation-tanh_optimizer.lr-0.004_seed-2` (failed): RuntimeError: injected failure for the report test"
        in markdown
    )
    assert "six times faster" in markdown  # the paper's claim stands beside the table
    assert "epochs to train/top1_err ≤ 80" in markdown  # the milestone the runs raced to
    # CIFAR-10: no crops; the activation race skips validation (limit_val_batches: 0), and the report says so
    assert "on the test split (one view) (no validation pass: val/* is empty)" in markdown


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
        record_file = config_file.parents[1] / "metrics.json"  # as if these runs had validated on a minival
        record = json.loads(record_file.read_text())
        record.get("final", {})["val/top1_err"] = 50.0
        record_file.write_text(json.dumps(record))
    markdown = to_markdown(build_report(copy))
    assert (
        "dataset imagenet. Errors in percent on the ILSVRC-2012 val split (test/*: evaluated once at the end) "
        "(10-crop: 4 corners + centre, each mirrored, softmax averaged) and the minival (val/*: held out of train) (centre crop)"
        in markdown
    )


def test_report_csv_png_and_tensorboard(sweep: Path) -> None:
    records = jobs(sweep)
    with open(sweep / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert [row["variant"] for row in table] == [
        "model.activation=relu,optimizer.lr=0.004",
        "model.activation=tanh,optimizer.lr=0.004",
    ]
    assert [(row["finished"], row["started"], row["baseline"]) for row in table] == [
        ("2", "2", "True"),
        ("1", "2", "False"),
    ]
    relu5 = [
        records[f"{2 * i}_model.activation-relu_optimizer.lr-0.004_seed-{i + 1}"]["final"]["test/top5_err"]
        for i in (0, 1)
    ]
    assert float(table[0]["test/top5_err_mean"]) == pytest.approx(statistics.fmean(relu5), abs=1e-6)
    assert float(table[0]["test/top5_err_std"]) == pytest.approx(statistics.stdev(relu5), abs=1e-6)
    with Image.open(sweep / "report.png") as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 200
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    text = EventAccumulator(str(sweep / "report"))
    text.Reload()
    assert "report/text_summary" in text.Tags()["tensors"]  # the markdown, in the TEXT tab
    assert sorted(text.Tags()["images"]) == ["report/curves", "report/report"]
    # no scalars and no HPARAMS sessions: the report never shows as an empty trial beside the training runs
    assert text.Tags()["scalars"] == []
    assert [p.name for p in (sweep / "report").iterdir() if p.is_dir()] == []


def test_report_cli_on_a_copied_sweep(sweep: Path, tmp_path: Path, cli_env: dict) -> None:
    copy = tmp_path / "copied"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report*"))
    proc = run_cli("alexnet-report", str(copy), env=cli_env)
    assert "| model.activation=relu,optimizer.lr=0.004 (baseline) | 2 / 2 |" in proc.stdout
    assert (copy / "report.md").read_text() in proc.stdout
    missing = run_cli("alexnet-report", str(tmp_path / "nope"), env=cli_env, check=False)
    assert missing.returncode == 2 and missing.stderr.startswith(f"error: {tmp_path}/nope is not a directory")


def test_milestone_stop_records_when_and_stops(sweep: Path) -> None:
    records = jobs(sweep)
    relu = [records[f"{2 * i}_model.activation-relu_optimizer.lr-0.004_seed-{i + 1}"] for i in (0, 1)]
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
    assert "| model.activation=tanh,optimizer.lr=0.004 | 1 / 2 |" in text
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
    # the report ranks the trials by what the search minimised, and says how to estimate the winner's error
    report = (folder / "report.md").read_text()
    assert report.splitlines()[0] == f"# Search: {folder.name} (Optuna, minimising val/top1_err_best)"
    ranked = [line.split(" | ") for line in report.splitlines() if line.startswith(("| 1 | `", "| 2 | `"))]
    by_job = {p.parent.name.split("_")[0]: t["final"]["val/top1_err_best"] for p, t in
              zip(sorted(folder.glob("*/metrics.json")), trials, strict=True)}  # fmt: skip
    assert [float(row[2]) for row in ranked] == pytest.approx(sorted(by_job.values()), abs=1e-3)
    assert [float(row[2]) for row in ranked] == pytest.approx([by_job[row[1].strip("`")] for row in ranked], abs=1e-3)
    best_lr = results.best_params["optimizer.lr"]
    seeds = {str(t["seed"]) for t in trials}
    estimate = f"seed={','.join([str(s) for s in range(1, 10) if str(s) not in seeds][:5])}"
    assert f"optimizer.lr={best_lr}" in report and estimate in report and "Per seed" not in report


def test_a_search_is_read_from_its_trials_hydra_config(tmp_path: Path) -> None:
    """Optuna's sweeper writes no multirun.yaml: a trial's .hydra/hydra.yaml says it was a search, which way (a
    one-element direction list too) and what it searched, including keys every trial happened to set alike."""
    from omegaconf import OmegaConf

    from alexnet_lab.report.sweep import Job, Search, search_of

    (tmp_path / "0_x" / ".hydra").mkdir(parents=True)
    sweeper = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "direction": ["maximize"],
               "params": {"data.batch_size": "choice(64)", "optimizer.lr": "interval(0.001, 0.1)"}}  # fmt: skip
    hydra = {"hydra": {"sweeper": sweeper, "runtime": {"choices": {"hparams_search": "cudaconvnet_optuna"}}}}
    OmegaConf.save(hydra, tmp_path / "0_x" / ".hydra" / "hydra.yaml")
    job = Job(tmp_path / "0_x", {}, "finished", config={"optimized_metric": "val/top1_err_best"})
    assert search_of([job]) == Search(
        "val/top1_err_best", "maximize", ["data.batch_size", "optimizer.lr"], "cudaconvnet_optuna"
    )
    sweeper["_target_"] = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    OmegaConf.save(hydra, tmp_path / "0_x" / ".hydra" / "hydra.yaml")
    assert search_of([job]) is None


# ------------------------------------------------------------------------------------ constructed sweeps


def fake_sweep(root: Path, ablation: dict, jobs: list[tuple[dict, dict, int]], budget: str = "paper",
               experiment: str | None = None) -> Path:  # fmt: skip
    """A sweep dir as alexnet-train leaves it: per job .hydra/{overrides,config,hydra}.yaml and metrics.json. A job's
    final metrics may carry "max_epochs" (its own cap) and "resolution" (its milestone's, in epochs)."""
    from omegaconf import OmegaConf

    root.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for overrides, _, _ in jobs for k in overrides})
    params = {k: ",".join(dict.fromkeys(str(o[k]) for o, _, _ in jobs)) for k in keys}
    OmegaConf.save({"hydra": {"sweeper": {"params": params}, "overrides": {"task": []}}}, root / "multirun.yaml")
    for number, (overrides, final, epochs) in enumerate(jobs):
        job = root / (f"{number}_" + "_".join(f"{k}-{v}" for k, v in overrides.items()))
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save([f"{k}={v}" for k, v in overrides.items()], job / ".hydra" / "overrides.yaml")
        config = {"data": {"_target_": "alexnet_lab.data.CIFAR10DataModule"}, "ablation": ablation, "budget": budget}
        OmegaConf.save(config, job / ".hydra" / "config.yaml")
        OmegaConf.save({"hydra": {"runtime": {"choices": {"experiment": experiment}}}}, job / ".hydra" / "hydra.yaml")
        final = dict(final)
        cap = final.pop("max_epochs", None)
        if "resolution" in final:
            final["milestone/resolution"] = final.pop("resolution")
        record = {
            "status": "finished",
            "seed": int(overrides["seed"]),
            "final": final,
            "epochs": epochs,
            "seconds": 1.0,
            "data": {"test_images": 10_000, "val_split": "5000 images held out of train"},
            "test_ckpt": "weights at the end of training",
            "config": {"trainer": {"max_epochs": cap}} if cap else {},
        }
        (job / "metrics.json").write_text(json.dumps(record))
    return root


LRN_CLAIM = {
    "name": "lrn",
    "baseline": {"model": "base"},
    "budgets": {"small": 3, "paper": 140},
    "claims": [{"dataset": "cifar10", "metric": "top1", "value": 1.0, "tolerance": 0.25, "source": "a config header",
                "text": "one point"}],
}  # fmt: skip


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
    assert "- a config header (top1 1 points ± 0.25): one point" in markdown  # the claim with its source and band
    assert (
        "Budget: paper (140 epochs per run; at most 140 epochs configured)." in markdown
        and "cannot decide" not in markdown
    )
    if label == "inconclusive":
        assert "seeds per variant would bring the interval's half-width under half the gap" in markdown
    if label == "no effect":  # a zero-ish effect measured to 0.01 points is still at least one test image wide
        assert check.interval.high - check.interval.low >= 2 * 0.01


def test_the_projects_own_claims_are_used_and_old_sweeps_still_read(tmp_path: Path) -> None:
    """A sweep of experiment=lrn_ablation is judged against the claims conf/experiment/lrn_ablation.yaml states
    today (source, tolerance), whatever its jobs stored; a sweep stored in the old {dataset: {top1: x}} form reads."""
    old = {**LRN_CLAIM, "baseline": {"model.norm": "rnorm"}, "claims": {"cifar10": {"top1": 1.0, "text": "old"}}}
    jobs = [({"model.norm": n, "seed": s}, {"test/top1_err": 20.0 + s / 10 + (n == "none") * 0.3}, 140)
            for n in ("rnorm", "none") for s in (1, 2, 3)]  # fmt: skip
    today = build_report(fake_sweep(tmp_path / "a", old, jobs, experiment="lrn_ablation"))
    (check,) = today.checks
    assert check.claim.source == "cuda-convnet, layer-params-18pct.cfg / -19pct.cfg headers"
    assert check.claim.band == (0.0, 2.0)
    stored = build_report(fake_sweep(tmp_path / "b", old, jobs))
    (check,) = stored.checks
    assert (check.claim.value, check.claim.tolerance, check.claim.source) == (1.0, 0.0, "not recorded")


def test_val_columns_are_shown_only_when_val_is_another_split(tmp_path: Path) -> None:
    """With data.val_size=0 the runs' val/* is the test split again (cuda-convnet's protocol): the same figures, so
    the table shows them once and says why, unless a run chose with them (tested a chosen checkpoint, stopped early
    or followed them with its learning rate): then they are shown and those runs listed. A held-out split keeps its
    own columns."""
    from omegaconf import OmegaConf

    jobs = [({"model": m, "seed": s}, {"test/top1_err": 20.0 + s + (m == "none"), "test/top5_err": 1.0,
                                        "val/top1_err": 30.0 + s, "val/top5_err": 2.0}, 140)
            for m in ("base", "none") for s in (1, 2)]  # fmt: skip
    held_out = to_markdown(build_report(fake_sweep(tmp_path / "held", LRN_CLAIM, jobs)))
    assert (
        "| variant | finished / started | test top-1 | test top-5 | val top-1 | val top-5 | Δ test top-1 |" in held_out
    )
    assert "| model=base (baseline) | 2 / 2 | 21.50 ± 0.71 | 1.00 ± 0.00 | 31.50 ± 0.71 | 2.00 ± 0.00 | - |" in held_out
    sweep = fake_sweep(tmp_path / "test", LRN_CLAIM, jobs)
    for record_file in sweep.glob("*/metrics.json"):
        record = json.loads(record_file.read_text())
        record["data"]["val_split"] = "test split (data.val_size=0)"
        record_file.write_text(json.dumps(record))
    once = to_markdown(build_report(sweep))
    assert "| variant | finished / started | test top-1 | test top-5 | Δ test top-1 | Δ test top-5 |" in once
    assert "| model=base (baseline) | 2 / 2 | 21.50 ± 0.71 | 1.00 ± 0.00 | - | - | 140.0 |" in once
    assert "on the test split (one view; val/* measures the same split: every training image trains" in once
    assert "val top-1" not in once
    # a run that tested the checkpoint which did best on val/* (here the test split) chose on test: val/* is
    # another figure then, shown, and the report says the test errors are optimistic
    first = next(sweep.glob("0_*")) / "metrics.json"
    first.write_text(json.dumps({**json.loads(first.read_text()), "test_ckpt": "/x/checkpoints/epoch037.ckpt"}))
    chosen = to_markdown(build_report(sweep))
    assert "| model=base (baseline) | 2 / 2 | 21.50 ± 0.71 | 1.00 ± 0.00 | 31.50 ± 0.71 | 2.00 ± 0.00 | - |" in chosen
    assert "**1 of 4 finished runs chose with val/*, which was the split they report as test: their test " in chosen
    assert "- `0_model-base_seed-1`: tested epoch037.ckpt, not its final weights\n" in chosen
    assert "never used to choose" not in chosen
    # a run whose config stopped early on val/* and followed it with its learning rate chose on test too
    first.write_text(json.dumps({**json.loads(first.read_text()), "test_ckpt": "weights at the end of training"}))
    config_file = next(sweep.glob("1_*")) / ".hydra" / "config.yaml"
    config = OmegaConf.load(config_file)
    config.callbacks = {"early_stopping": {"_target_": "lightning.pytorch.callbacks.EarlyStopping",
                                           "monitor": "val/top1_err"}}  # fmt: skip
    config.scheduler = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "_partial_": True}
    OmegaConf.save(config, config_file)
    followed = to_markdown(build_report(sweep))
    assert ("- `1_model-base_seed-2`: could stop early on val/top1_err (callbacks.early_stopping; epochs unknown); "
            "its learning rate followed val/top1_err (ReduceLROnPlateau)") in followed  # fmt: skip
    assert "val top-1" in followed and "never used to choose" not in followed
    config_file.write_text(OmegaConf.to_yaml(OmegaConf.masked_copy(config, ["data", "ablation", "budget"])))
    # a run that does not say which weights it tested: val/* shown, no claim either way
    first.write_text(json.dumps({k: v for k, v in json.loads(first.read_text()).items() if k != "test_ckpt"}))
    unknown = to_markdown(build_report(sweep))
    assert "| 31.50 ± 0.71 | 2.00 ± 0.00 |" in unknown and "and the test split again (val/*: every training" in unknown
    assert "never used to choose" not in unknown and "chose with val/*" not in unknown
    # ImageNet without a minival (data.minival_per_class=0): val/* is the val split reported, and the paper's plateau
    # schedule follows it
    for job in sweep.glob("*_seed-*"):
        config = OmegaConf.load(job / ".hydra" / "config.yaml")
        config.data = {"_target_": "alexnet_lab.data.ImageNetDataModule", "minival_per_class": 0}
        config.scheduler = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau"}
        OmegaConf.save(config, job / ".hydra" / "config.yaml")
        record = json.loads((job / "metrics.json").read_text())
        record["data"]["val_split"] = "the val split val/ (50000 images), one centre crop"
        (job / "metrics.json").write_text(json.dumps(record))
    imagenet = to_markdown(build_report(sweep))
    assert "and the ILSVRC-2012 val split again (val/*: no minival held out)" in imagenet
    assert "**4 of 4 finished runs chose with val/*, which was the split they report as test" in imagenet


def test_small_budget_says_first_that_it_cannot_decide(tmp_path: Path) -> None:
    jobs = [
        ({"model": m, "seed": s}, {"test/top1_err": 40.0 + s + (m == "none")}, 3)
        for m in ("base", "none")
        for s in (1, 2, 3)
    ]
    report = build_report(fake_sweep(tmp_path, LRN_CLAIM, jobs, budget="small"))
    markdown = to_markdown(report)
    assert markdown.splitlines()[0] == "# Ablation: lrn (small budget: cannot decide the claims)"
    assert markdown.splitlines()[2].startswith(
        "**Small budget: this sweep cannot decide the claims.** Its runs trained 3 epochs per run; it tries"
    )
    assert "`budget=paper` (140 epochs)" in markdown
    assert report.checks[0].verdict.label == "not decided" and "(agrees here)" in report.checks[0].verdict.sentence
    # a debug sweep (debug=limit) says that its runs saw part of the data
    first = next(tmp_path.glob("0_*")) / "metrics.json"
    first.write_text(json.dumps({**json.loads(first.read_text()), "subset": {"limit_train_batches": 10}}))
    assert "3 epochs per run **on part of the data** (limit_train_batches=10: a debug run)" in to_markdown(
        build_report(tmp_path)
    )


def sha256_text(text: str) -> str:
    """The digest alexnet-eval records of a checkpoint file holding ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


def test_lrn_divisors_come_from_the_run_or_from_an_eval_of_its_final_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's divisors come from an alexnet-eval run into <job>/eval if it tested the bytes of the job's last.ckpt
    as they are now (size and digest), else from the run's own validation figures: an eval of other weights, one that
    names no digest (made before 2026-12-02), one whose job trained on since, one that states another size, or one
    beside a last.ckpt (or checkpoints folder) that is a link is not used."""
    own = {"lrn/rnorm1/divisor_median": 1.1, "lrn/rnorm1/divisor_p99": 3.0}
    jobs = [*[({"model.norm": "rnorm", "seed": s}, {"test/top1_err": 20.0, **own}, 140) for s in (1, 4, 6)],
            *[({"model.norm": "rnorm", "seed": s}, {"test/top1_err": 20.0}, 140) for s in (2, 3, 5, 7, 8)],
            *[({"model.norm": "none", "seed": s}, {"test/top1_err": 20.5}, 140) for s in range(1, 9)]]  # fmt: skip
    sweep = fake_sweep(tmp_path, {**LRN_CLAIM, "baseline": {"model.norm": "rnorm"}}, jobs)
    for seed in range(1, 9):
        job = next(sweep.glob(f"*_model.norm-rnorm_seed-{seed}"))
        (job / "checkpoints").mkdir()
        (job / "checkpoints" / "last.ckpt").write_text(f"weights {seed}")
        (job / "eval").mkdir()
        digest = {3: sha256_text("weights x"), 4: None}.get(seed, sha256_text(f"weights {seed}"))
        evaluated = {"status": "finished", "ckpt_sha256": digest, "ckpt_bytes": 9 + (seed == 8),
                     "final": {"test/lrn/rnorm1/divisor_median": 1.3, "test/lrn/rnorm1/divisor_p99": 2.0}}  # fmt: skip
        (job / "eval" / "metrics.json").write_text(json.dumps(evaluated))

    def job_dir(seed: int) -> Path:
        return next(sweep.glob(f"*_model.norm-rnorm_seed-{seed}"))

    (job_dir(5) / "checkpoints" / "last.ckpt").rename(tmp_path / "elsewhere.ckpt")
    (job_dir(5) / "checkpoints" / "last.ckpt").symlink_to(tmp_path / "elsewhere.ckpt")  # the same bytes, linked
    (job_dir(6) / "checkpoints" / "last.ckpt").write_text("weights 9")  # trained on since: same size, other bytes
    shutil.move(job_dir(7) / "checkpoints", tmp_path / "folder")
    (job_dir(7) / "checkpoints").symlink_to(tmp_path / "folder")  # the folder a link
    from alexnet_lab.report import sweep as sweep_module

    hashed: list[str] = []
    monkeypatch.setattr(sweep_module, "sha256", lambda path: hashed.append(path.parents[1].name[-1]) or sha256_text(
        path.read_text()))  # fmt: skip
    report = build_report(sweep)
    assert sorted(hashed) == ["1", "2", "3", "6"]  # not 4 (no digest), 5 and 7 (links) or 8 (another size)
    assert sorted((j.seed, j.divisors, j.divisors_from.split(",")[0]) for j in report.rows[0].jobs) == [
        (1, {"rnorm1": (1.3, 2.0)}, "the test images"),  # measured on purpose: before the run's own figures
        (2, {"rnorm1": (1.3, 2.0)}, "the test images"),
        (3, {}, ""),
        (4, {"rnorm1": (1.1, 3.0)}, "the validation images after the last epoch"),
        (5, {}, ""),
        (6, {"rnorm1": (1.1, 3.0)}, "the validation images after the last epoch"),
        (7, {}, ""),
        (8, {}, ""),
    ]
    markdown = to_markdown(report)
    assert "- model.norm=rnorm: rnorm1 median 1.200, 99th percentile 2.500 (4 of 8 finished seeds, over " in markdown
    assert "model.norm=none: rnorm" not in markdown  # no LRN layer, nothing measured


ACTIVATION = {
    "name": "activation",
    "baseline": {"model.activation": "relu"},
    "tune": ["optimizer.lr"],
    "selection_seeds": [101, 102],
    "milestone": {"metric": "train/top1_err", "below": 25.0},
    "budgets": {"small": 3, "paper": 100},
    "claims": [{"dataset": "cifar10", "metric": "speedup", "value": 6.0, "tolerance": 1.0, "source": "Figure 1",
                "text": "six times faster"}],
}  # fmt: skip


def race(activation: str, lr: str, seed: int, epochs: float | None, cap: int = 100, resolution: float = 0.0026):
    """One job of a milestone race: ``epochs`` to the milestone, None for a run that never got there in ``cap``."""
    final = {"max_epochs": cap, "resolution": resolution} | ({} if epochs is None else {"milestone/epochs": epochs})
    return (
        {"model.activation": activation, "optimizer.lr": lr, "seed": seed},
        final,
        cap if epochs is None else math.ceil(epochs),
    )


def selection(grid: dict[str, dict[str, list[float | None]]]) -> list:
    """Stage 1: every rate of each activation on the selection seeds 101 and 102."""
    return [
        race(act, lr, 101 + i, e) for act, rates in grid.items() for lr, es in rates.items() for i, e in enumerate(es)
    ]


BRACKETED = {
    "relu": {"0.001": [8.0, 8.3], "0.002": [5.0, 5.2], "0.004": [6.0, 6.1]},
    "tanh": {"0.004": [40.0, 41.0], "0.008": [31.0, 30.0], "0.016": [35.0, 36.0]},
}


def test_each_activation_takes_its_fastest_rate_on_the_selection_seeds_only(tmp_path: Path) -> None:
    """Stage 2's seeds (1-3) estimate the ratio; the selection seeds (101, 102) chose the rates and are not in it,
    though stage 2's ReLU seeds happen to be slower than another rate's selection runs."""
    jobs = selection(BRACKETED)
    jobs += [race("relu", "0.002", s, e) for s, e in ((1, 7.0), (2, 7.4), (3, 6.8))]
    jobs += [race("tanh", "0.008", s, e) for s, e in ((1, 40.0), (2, 43.0), (3, 41.0))]
    report = build_report(fake_sweep(tmp_path, ACTIVATION, jobs, experiment="no_such_experiment"))
    relu, tanh = report.rows
    assert relu.tuned == {"optimizer.lr": "0.002"} and tanh.tuned == {"optimizer.lr": "0.008"}
    assert sorted(j.seed for j in relu.jobs) == [1, 2, 3] and sorted(j.seed for j in tanh.jobs) == [1, 2, 3]
    (check,) = report.checks
    assert check.interval.n == 3 and check.interval.method == "paired t"
    assert math.exp(check.interval.estimate) == pytest.approx((40 / 7.0 * 43 / 7.4 * 41 / 6.8) ** (1 / 3))
    assert check.verdict.label == "agrees"
    markdown = to_markdown(report)
    assert "- model.activation=relu: optimizer.lr=0.002 (chosen): 5.10 epochs (2/2 reached, seeds 101,102)" in markdown
    assert "- model.activation=tanh: optimizer.lr=0.016: 35.50 epochs (2/2 reached, seeds 101,102)" in markdown
    assert "Selection seeds are never part of the estimate" in markdown


def test_a_fastest_rate_at_the_edge_of_its_grid_is_not_bracketed(tmp_path: Path) -> None:
    """tanh's fastest rate is its grid's top (a faster one was never tried): no verdict, and the rate to add."""
    grid = {"relu": BRACKETED["relu"], "tanh": {"0.002": [60.0, 62.0], "0.004": [50.0, 51.0], "0.008": [42.0, 43.0]}}
    jobs = selection(grid) + [race(a, lr, s, e) for a, lr, e in (("relu", "0.002", 7.0), ("tanh", "0.008", 42.0))
                              for s in (1, 2)]  # fmt: skip
    report = build_report(fake_sweep(tmp_path, ACTIVATION, jobs))
    (check,) = report.checks
    assert check.verdict.label == "not bracketed"
    assert (
        "optimizer.lr=0.008 is the top of its grid (0.002, 0.004, 0.008); add optimizer.lr=0.016"
        in check.verdict.sentence
    )
    assert "**model.activation=tanh: not bracketed.**" in to_markdown(report)


def test_a_run_that_never_reached_the_milestone_ranks_behind_every_run_that_did(tmp_path: Path) -> None:
    """Unequal caps: tanh at 0.016 was cut at 30 epochs without reaching it (its mean would be 30, "fastest"); 0.008
    reached it at 45 and 46 under a cap of 100. 0.008 is the fastest; 0.016 counts as slower than any that got there."""
    grid = {"relu": BRACKETED["relu"], "tanh": {"0.004": [60.0, 61.0], "0.008": [45.0, 46.0]}}
    jobs = [race("tanh", "0.016", s, None, cap=30) for s in (101, 102)] + selection(grid)  # 0.016 started first
    jobs += [race(a, lr, s, e) for a, lr, e in (("relu", "0.002", 7.0), ("tanh", "0.008", 44.0)) for s in (1, 2, 3)]
    report = build_report(fake_sweep(tmp_path, ACTIVATION, jobs))
    (tanh,) = [row for row in report.rows if row.values.get("model.activation") == "tanh"]
    assert tanh.tuned == {"optimizer.lr": "0.008"}
    assert [s for label, s, _ in report.tuning if label == "model.activation=tanh"] == [
        "optimizer.lr=0.004",
        "optimizer.lr=0.008 (chosen)",
        "optimizer.lr=0.016",
    ]  # the grid in its order, whatever order its runs started in
    assert (
        "model.activation=tanh",
        "optimizer.lr=0.016",
        "never reached (0/2 reached, seeds 101,102)",
    ) in report.tuning


@pytest.mark.parametrize("side", ["variant", "baseline"])
def test_censored_runs_on_either_side_leave_no_interval(tmp_path: Path, side: str) -> None:
    """A tanh run that never got there in 58 epochs (or a ReLU run cut at 6): only a bound, so no interval and no
    verdict, whatever the other runs say; the report says which side and what would decide it."""
    jobs = selection(BRACKETED)
    tanh = [55.0, 57.0, None] if side == "variant" else [44.0, 43.0, 41.0]
    relu = [7.0, 7.4, 6.8] if side == "variant" else [7.0, None, 6.8]
    jobs += [race("relu", "0.002", s, e, cap=6) for s, e in zip((1, 2, 3), relu)]
    jobs += [race("tanh", "0.008", s, e, cap=58) for s, e in zip((1, 2, 3), tanh)]
    (check,) = build_report(fake_sweep(tmp_path, ACTIVATION, jobs)).checks
    assert (check.interval.low, check.interval.high) == (-math.inf, math.inf) and check.interval.censored == side
    assert check.verdict.label == "inconclusive" and "raise trainer.max_epochs" in check.verdict.sentence
    assert check.measured.startswith("≥ " if side == "variant" else "≤ ")


def test_selection_that_is_not_complete_chooses_nothing(tmp_path: Path) -> None:
    """A failed (diverged) selection run counts as never reached, not as a missing seed; a setting still running on
    a selection seed, or a grid run on the wrong seeds, chooses nothing and gives no verdict or stage-2 command."""
    grid = {"relu": BRACKETED["relu"], "tanh": {"0.004": [40.0, 41.0], "0.008": [31.0, 30.0], "0.016": [None, None]}}
    jobs = selection(grid)
    for overrides, final, _ in jobs:
        if overrides["optimizer.lr"] == "0.016" and overrides["model.activation"] == "tanh":
            final.pop("max_epochs")
    sweep = fake_sweep(tmp_path / "failed", ACTIVATION, jobs + [race(a, lr, s, e) for a, lr, e in
                       (("relu", "0.002", 7.0), ("tanh", "0.008", 30.5)) for s in (1, 2)])  # fmt: skip
    for record_file in sweep.glob("*tanh*0.016*/metrics.json"):
        record_file.write_text(json.dumps({**json.loads(record_file.read_text()), "status": "failed"}))
    report = build_report(sweep)
    assert report.rows[1].tuned == {"optimizer.lr": "0.008"}  # both seeds compared, 0.016's failures ranked last
    assert (
        "model.activation=tanh",
        "optimizer.lr=0.016",
        "never reached (0/2 reached, seeds 101,102)",
    ) in report.tuning
    running = fake_sweep(tmp_path / "running", ACTIVATION, selection(BRACKETED))
    (next(running.glob("*tanh*0.016*seed-102")) / "metrics.json").write_text(
        json.dumps({"status": "running", "seed": 102})
    )
    report = build_report(running)
    assert report.rows[1].tuned == {} and report.rows[1].jobs == [] and report.checks == []
    assert report.rows[1].unchosen == "selection runs not finished yet (seeds 102)"
    assert "**model.activation=tanh: no setting chosen**: selection runs not finished yet" in to_markdown(report)
    wrong = [
        race(a, lr, s, e) for a, rates in BRACKETED.items() for lr, es in rates.items() for s, e in zip((1, 2), es)
    ]
    report = build_report(fake_sweep(tmp_path / "wrong", ACTIVATION, wrong))
    assert [row.unchosen for row in report.rows] == [
        "no run on the selection seeds 101,102 yet"
    ] * 2 and not report.checks


def test_the_grid_is_continued_by_its_own_step() -> None:
    from alexnet_lab.report.analysis import bracket

    def grid(values: list[str]) -> dict[str, dict[str, str]]:
        return {v: {"x": v} for v in values}

    assert bracket(grid(["0.002", "0.004", "0.008"]), "0.008", ["x"]).endswith("add x=0.016")  # geometric
    assert bracket(grid(["0.1", "0.2", "0.3"]), "0.3", ["x"]).endswith("add x=0.4")  # arithmetic
    assert bracket(grid(["-3", "-2", "-1"]), "-3", ["x"]).endswith("add x=-4")
    assert bracket(grid(["0.002", "0.004", "0.008"]), "0.004", ["x"]) is None  # bracketed
    assert bracket(grid(["relu", "tanh"]), "tanh", ["x"]) is None  # not numbers: no order to check


def test_a_milestone_crossed_in_the_same_window_by_every_seed_is_not_a_point(tmp_path: Path) -> None:
    """Runs checked once per 10,000-image window (0.2 epochs): ReLU crossed in the same window for all three seeds.
    The ratio's interval covers what that window allows, and says that the resolution stands in for a zero spread."""
    jobs = selection(BRACKETED)
    jobs += [race("relu", "0.002", s, 7.2, resolution=0.2) for s in (1, 2, 3)]
    jobs += [race("tanh", "0.008", s, 7.2 * 5.85, resolution=0.2) for s in (1, 2, 3)]
    (check,) = build_report(fake_sweep(tmp_path, ACTIVATION, jobs)).checks
    low, high = math.exp(check.interval.low), math.exp(check.interval.high)
    assert low == pytest.approx(5.85 * (7.2 * 5.85 - 0.2) / (7.2 * 5.85) * 7.2 / 7.4, rel=1e-6)
    assert high == pytest.approx(5.85 * (7.2 * 5.85 + 0.2) / (7.2 * 5.85) * 7.2 / 7.0, rel=1e-6)
    assert low < 5.70 and high > 6.0  # wider than the printed 5.76-5.94 of a zero-spread t interval
    assert "zero spread" in check.interval.notes[0]


def test_the_budget_line_names_the_schedule_and_each_runs_own_cap(tmp_path: Path) -> None:
    """A milestone race trains a different number of epochs per run; a run with a lower cap says so."""
    ablation = {**ACTIVATION, "schedules": {"paper": "until 25 % training error"}}
    jobs = selection(BRACKETED) + [race("tanh", "0.008", s, None, cap=60) for s in (1, 2)]
    lines = to_markdown(build_report(fake_sweep(tmp_path, ablation, jobs))).splitlines()
    assert lines[2] == (
        "Budget: paper: until 25 % training error (a run stops when train/top1_err ≤ 25.0, at most 60-100 epochs (a "
        "run's own `trainer.max_epochs`; the budget sets 100); finished runs trained 5-60 epochs per run)."
    )


def test_a_variant_without_estimation_seeds_gets_the_command_that_runs_them(tmp_path: Path) -> None:
    report = build_report(fake_sweep(tmp_path, ACTIVATION, selection(BRACKETED), experiment="activation_ablation"))
    assert report.checks == []
    assert (
        "- model.activation=tanh: no estimation seeds yet; run `alexnet-train -m experiment=activation_ablation "
        f"budget=paper model.activation=tanh optimizer.lr=0.008 seed=1,2,3,4,5 hydra.sweep.dir={tmp_path}`"
    ) in to_markdown(report)


def test_the_scorecard_gathers_every_claim_of_several_sweeps(tmp_path: Path, cli_env: dict) -> None:
    """Two sweeps (one as its job dirs, one as the report folder alexnet-report left) in one table and one chart."""
    from alexnet_lab.report import write_report

    lrn_jobs = [({"model.norm": n, "seed": s}, {"test/top1_err": 20.0 + s / 10 + (n == "none") * (0.4 + s / 50),
                                                "test/top5_err": 2.0}, 140) for n in ("rnorm", "none") for s in (1, 2, 3)]  # fmt: skip
    fake_sweep(tmp_path / "results" / "lrn", {**LRN_CLAIM, "baseline": {"model.norm": "rnorm"}}, lrn_jobs,
               experiment="lrn_ablation")  # fmt: skip
    activation = fake_sweep(tmp_path / "runs" / "activation", ACTIVATION, selection(BRACKETED) + [
        race(a, lr, s, e * (1 + s / 100)) for a, lr, e in (("relu", "0.002", 7.0), ("tanh", "0.008", 42.0)) for s in (1, 2, 3)])  # fmt: skip
    write_report(activation)
    copied = tmp_path / "results" / "activation"
    copied.mkdir()
    for name in ("report.md", "report.json"):  # what docs/results keeps of a sweep
        shutil.copy(activation / name, copied / name)
    out = tmp_path / "card"
    proc = run_cli("alexnet-report", "--scorecard", str(out), str(tmp_path / "results"), env=cli_env)
    rows = [line for line in (out / "scorecard.md").read_text().splitlines() if line.startswith("| [")]
    assert len(rows) == 2 and proc.stdout.count("| [") == 2
    lrn = next(r for r in rows if r.startswith("| [lrn]"))
    assert "(../results/lrn/report.md)" in lrn and "| top1 1 points ± 1 (cifar10) |" in lrn
    assert "cuda-convnet, layer-params-18pct.cfg / -19pct.cfg headers" in lrn and "| 3 |" in lrn
    speed = next(r for r in rows if r.startswith("| [activation]"))
    assert "| paper, Figure 1 caption |" not in speed and "| Figure 1 |" in speed  # its stored source (no experiment)
    assert "| speedup 6x ± 1 (cifar10) |" in speed and "| **agrees** |" in speed
    with Image.open(out / "scorecard.png") as png:
        assert png.format == "PNG" and png.height > 250
    empty = run_cli("alexnet-report", "--scorecard", str(out), str(tmp_path / "card"), env=cli_env, check=False)
    assert empty.returncode == 2 and empty.stderr.startswith("error: no checked claim in")


def test_the_report_reads_job_dirs_as_data(tmp_path: Path) -> None:
    """Text from job dirs is escaped, interpolations are not resolved, a corrupt record is one unreadable row, a linked
    job dir is skipped, and report files planted as links are replaced, never written through."""
    from alexnet_lab.report import write_report

    ablation = {**LRN_CLAIM, "name": "${oc.env:HOME}", "baseline": {"model": "base"}}
    jobs = [({"model": m, "seed": s}, {"test/top1_err": 20.0 + s + (m != "base")}, 3)
            for m in ("base", "a|b<script>") for s in (1, 2)]  # fmt: skip
    sweep = fake_sweep(tmp_path / "sweep", ablation, jobs)
    (sweep / "0_model-base_seed-1" / "metrics.json").write_text("[1, 2, 3]")  # list-shaped
    (sweep / "1_model-base_seed-2" / "metrics.json").write_text("{not json")
    outside = tmp_path / "outside"
    shutil.copytree(sweep / "2_model-a|b<script>_seed-1", outside / "job")
    (sweep / "9_linked").symlink_to(outside / "job")
    secret = tmp_path / "precious.txt"
    secret.write_text("keep me")
    (sweep / "report.md").symlink_to(secret)
    (sweep / "report.csv").symlink_to(secret)
    markdown = write_report(sweep)
    assert secret.read_text() == "keep me" and not (sweep / "report.md").is_symlink()
    assert (sweep / "report.md").read_text() == markdown
    assert markdown.splitlines()[0] == "# Ablation: ${oc.env:HOME} (paper budget)"  # not the reader's home dir
    assert "a\\|b&lt;script&gt;" in markdown and "<script>" not in markdown
    assert "`0_model-base_seed-1` (unreadable): metrics.json: TypeError: a JSON list, not an object" in markdown
    assert "`1_model-base_seed-2` (unreadable): metrics.json: JSONDecodeError" in markdown
    assert "9_linked" not in markdown


def test_a_mean_curve_says_how_many_seeds_it_averages_at_each_epoch() -> None:
    """While a seed is unfinished the curves' legend does not call its later epochs a mean of every seed."""
    from alexnet_lab.report.render import seeds_per_epoch

    assert seeds_per_epoch([2] * 28 + [1] * 112) == "2 seeds to epoch 28, 1 to epoch 140"
    assert seeds_per_epoch([5] * 140) == "5 seeds" and seeds_per_epoch([1] * 3) == "1 seed"


@pytest.mark.parametrize("epochs", [20, 5])
def test_the_curves_zoom_into_the_last_fifth_of_the_epochs(tmp_path: Path, epochs: int) -> None:
    """The right panel shows each variant's mean over its seeds for the last fifth of the epochs on its own scale
    (where a point of error is visible); a run of under ten epochs has only the whole curve."""
    from torch.utils.tensorboard import SummaryWriter

    from alexnet_lab.report.render import curves_figure

    jobs = [({"model": m, "seed": s}, {"test/top1_err": 20.0}, epochs) for m in ("base", "none") for s in (1, 2)]
    sweep = fake_sweep(tmp_path, LRN_CLAIM, jobs)
    for job in sweep.glob("*_seed-*"):
        offset = (1.0 if "none" in job.name else 0.0) + (0.5 if job.name.endswith("2") else 0.0)
        with SummaryWriter(str(job)) as writer:
            for epoch in range(epochs):
                writer.add_scalar("val/top1_err", 60.0 - epoch + offset, epoch)
    fig = curves_figure(build_report(sweep))
    if epochs == 5:
        assert len(fig.axes) == 1
        return
    main, zoom = fig.axes
    assert zoom.get_title() == "epochs 17-20, zoomed"
    (base, none) = [(list(line.get_xdata()), list(line.get_ydata())) for line in zoom.lines]
    assert base == ([17, 18, 19, 20], [44.25, 43.25, 42.25, 41.25])  # 60 - epoch + the seeds' mean offset 0.25
    assert none == ([17, 18, 19, 20], [45.25, 44.25, 43.25, 42.25])
    assert [len(line.get_xdata()) for line in main.lines] == [20, 20]


def test_a_curve_is_read_from_the_jobs_own_event_files_up_to_a_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A resumed run's later file wins for an epoch logged twice; an event file linked in from elsewhere is not read,
    and a job whose events are larger than any run's curves has none (reading them would stall the report)."""
    from torch.utils.tensorboard import SummaryWriter

    from alexnet_lab.report import sweep as sweep_module

    sweep = fake_sweep(tmp_path / "sweep", LRN_CLAIM, [({"model": "base", "seed": 1}, {"test/top1_err": 20.0}, 3)])
    (job_dir,) = sweep.glob("*_seed-*")
    for count, values in ((9, [50.0, 40.0, 35.0]), (10, [None, 30.0, 25.0])):  # the second: resumed at epoch 2
        with SummaryWriter(str(tmp_path / "w"), filename_suffix=".x") as writer:
            for epoch, value in enumerate(values):
                if value is not None:
                    writer.add_scalar("val/top1_err", value, epoch)
        (written,) = (tmp_path / "w").glob("*.x")  # named as in the same second by one process: 10 after 9
        written.rename(job_dir / f"events.out.tfevents.1796250242.vm.4242.{count}")
    elsewhere = tmp_path / "elsewhere"
    with SummaryWriter(str(elsewhere)) as writer:
        writer.add_scalar("val/top1_err", 99.0, 7)
    (linked,) = elsewhere.glob("events.out.tfevents.*")
    (job_dir / f"{linked.name}.9").symlink_to(linked)
    (job,) = [j for row in build_report(sweep).rows for j in row.jobs]
    assert job.curve("val/top1_err") == [50.0, 30.0, 25.0]
    monkeypatch.setattr(sweep_module, "EVENTS_CAP", 100)
    assert job.curve("val/top1_err") == []
    assert "its TensorBoard events hold 0 MiB, more than a run's curves" in caplog.text


def test_the_report_lists_each_seeds_pair(tmp_path: Path) -> None:
    """Behind every mean and interval: each finished run's errors by seed, and the paired difference."""
    jobs = [({"model.norm": "rnorm", "seed": s}, {"test/top1_err": e, "test/top5_err": 1.0}, 140)
            for s, e in ((1, 19.83), (2, 20.1), (3, 20.0))]  # fmt: skip
    jobs += [({"model.norm": "none", "seed": s}, {"test/top1_err": e, "test/top5_err": 1.5}, 140)
             for s, e in ((1, 19.43), (2, 20.6))]  # fmt: skip
    markdown = to_markdown(build_report(fake_sweep(tmp_path, {**LRN_CLAIM, "baseline": {"model.norm": "rnorm"}}, jobs)))
    table = markdown[markdown.index("| seed |") :].split("\n\n")[0].splitlines()
    assert table == [
        "| seed | model.norm=rnorm | model.norm=none |",
        "|---|---|---|",
        "| 1 | 19.83 / 1.00 | 19.43 / 1.50 (Δ -0.40) |",
        "| 2 | 20.10 / 1.00 | 20.60 / 1.50 (Δ +0.50) |",
        "| 3 | 20.00 / 1.00 | - |",
    ]
