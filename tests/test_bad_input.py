"""Bad input ends with one clear line, a non-zero exit and no run dir left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST, hydra_task, run_cli, write_batches
from hydra.core.hydra_config import HydraConfig

from alexnet_lab import cli, errors


def leftovers(logs: Path) -> list[Path]:
    return [p for p in logs.rglob("*") if p.is_file()] if logs.exists() else []


@pytest.mark.parametrize(
    "override, code, message",
    [
        ("model=vgg", 1, "model/vgg"),  # Hydra's own error, which names the missing option
        (
            "trainer.max_epochs=abc",
            2,
            "error: trainer.max_epochs='abc' is not an integer; give e.g. trainer.max_epochs=30",
        ),
        ("seed=x", 2, "error: seed='x' is not an integer in 0..4294967295; give e.g. seed=0, or leave it out"),
        (
            "compile=foo",
            2,
            "error: compile=foo: ",  # then torch's reason, in torch's words
        ),
        (  # the network's width follows the data: a contradicting one is named, not silently replaced
            "model.num_classes=5",
            2,
            (
                "error: model.num_classes=5 but the data has 10 classes; leave model.num_classes out (it follows the "
                "data), or set data.num_classes / data.classes"
            ),
        ),
    ],
)
def test_bad_overrides(override: str, code: int, message: str, cli_env: dict, tmp_path: Path) -> None:
    write_batches(tmp_path / "data" / "cifar10", n_train=100, n_test=20)
    proc = run_cli("alexnet-train", *FAST, override, env=cli_env, cwd=tmp_path, check=False)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert message in proc.stderr
    if code == 2:  # our own checks: exactly one line
        (line,) = proc.stderr.strip().splitlines()
        prefix = message.endswith(": ")  # ours, then a library's reason in its own words
        assert line.startswith(message) and len(line) > len(message) if prefix else line == message
    assert leftovers(tmp_path / "logs") == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_size=1.5", "data.batch_size=1.5 is not an integer; give e.g. data.batch_size=128"),
        ("optimizer.lr=fast", "optimizer.lr='fast' is not a number; give e.g. optimizer.lr=0.01"),
        ("data.hflip=maybe", "data.hflip='maybe' is not a boolean; use data.hflip=true or data.hflip=false"),
        ("channels_last=nhwc", "channels_last='nhwc': use channels_last=true, false or auto"),
    ],
)
def test_override_types_are_checked_against_the_defaults(override: str, message: str, composed) -> None:
    cfg = composed(override)
    with pytest.raises(errors.ConfigError) as err:
        cli.check_override_types(cfg)
    assert str(err.value) == message


def test_compile_takes_a_boolean_or_a_backend_name(composed) -> None:
    cli.check_override_types(composed("compile=aot_eager"))  # a torch.compile backend: no error
    cli.check_override_types(composed("compile=true"))
    with pytest.raises(errors.ConfigError, match="compile=3 is not a boolean"):
        cli.check_override_types(composed("compile=3"))


def test_missing_data_is_one_line_and_leaves_nothing(cli_env: dict, tmp_path: Path) -> None:
    proc = run_cli("alexnet-train", *FAST, env=cli_env, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no CIFAR-10 data at {tmp_path}/data/cifar10")
    assert last.endswith(
        "set data.path (once per machine: conf/local/default.yaml, or ALEXNET_CIFAR10) to one, or data.download=true"
    )
    assert "Traceback" not in proc.stderr
    assert leftovers(tmp_path / "logs") == []


def test_corrupt_archive_is_one_line(cli_env: dict, tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 truncated")
    proc = run_cli("alexnet-train", *FAST, f"data.path={archive}", env=cli_env, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: corrupt or truncated archive {archive}")
    assert leftovers(tmp_path / "logs") == [] and not list((tmp_path / "data").rglob("*.pt"))


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=cudaconvnet_18pct"],  # cuda-convnet's protocol: val/* only printed, the final weights tested
        ["experiment=tutorial_cifar10"],
        ["data.val_size=0", "scheduler=none", "test=false"],  # nothing tested: no checkpoint chosen
        ["data.val_size=0", "scheduler=none", "callbacks.model_checkpoint=null"],  # no best kept: the final tested
        ["data.val_size=0", "scheduler=none", "test_ckpt=last", "+callbacks.odd=1"],  # not a node: build says so
        ["hparams_search=cudaconvnet_optuna"],  # a single run of the search's config chooses nothing
    ],
)
def test_runs_that_choose_nothing_on_the_test_split_are_not_refused(overrides: list[str], composed) -> None:
    from alexnet_lab.runs import check_nothing_chosen_on_test

    check_nothing_chosen_on_test(composed(*overrides), searching=False)


@pytest.mark.parametrize("search", [True, False])
def test_a_failed_trial_is_told_to_optuna_as_failed(search: bool, tmp_path: Path) -> None:
    """Optuna 2.10 stops the whole search when a trial returns NaN: in an Optuna multirun a failed job raises (told
    FAIL, the search goes on: max_failure_rate), while other multiruns get NaN and go on to the next job. Either way
    the job's record says why it failed."""
    import json
    import math

    from alexnet_lab.train import hydra_main

    overrides = [*(["hparams_search=cudaconvnet_optuna"] if search else []), "hydra.mode=MULTIRUN",
                 f"data.path={tmp_path / 'missing'}", "trainer.accelerator=cpu"]  # fmt: skip
    with hydra_task("train", overrides, tmp_path / "job") as cfg:
        if search:
            with pytest.raises(RuntimeError, match=f"trial failed: {tmp_path / 'job'}/metrics.json says why"):
                hydra_main(cfg)
        else:
            assert math.isnan(hydra_main(cfg))
    record = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert record["status"] == "failed" and "no CIFAR-10 data at" in record["error"]


def test_a_search_whose_every_trial_failed_ends_in_one_line_and_a_report(cli_env: dict, tmp_path: Path) -> None:
    """Optuna's sweeper asks for the best trial at the end and raises when none completed: the search ends instead
    with one line pointing to the report, which lists why each trial failed."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    proc = run_cli("alexnet-train", "-m", "hparams_search=cudaconvnet_optuna", "hydra.sweeper.n_trials=2",
                   f"data.path={tmp_path / 'missing'}", f"hydra.sweep.dir={sweep}", env=cli_env, cwd=tmp_path,
                   check=False)  # fmt: skip
    assert proc.returncode == 2 and "No trials are completed yet" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: every trial of the Optuna search failed (2 of 2); why, per trial: {sweep / 'report.md'}"
    )
    report = (sweep / "report.md").read_text()
    assert report.count(f"(failed): no CIFAR-10 data at {tmp_path / 'missing'}") == 2


@pytest.mark.parametrize(
    "task, params, swept",
    [
        (["data.val_size=5000,10000", "test_ckpt=best"], {}, True),  # the jobs' own values decide: they check
        (["data=cifar10,imagenet"], {}, True),
        (["scheduler=none,plateau"], {}, True),
        (["seed=1,2", "data.val_size=0"], {}, False),  # nothing the check reads is swept: refused at the start
        ([], {"optimizer.lr": "interval(0.001, 0.1)", "data.batch_size": "choice(64, 128)"}, False),
        ([], {"data.val_size": "choice(0, 5000)"}, True),
    ],
)
def test_the_sweeps_start_leaves_swept_choices_to_the_jobs(task: list[str], params: dict, swept: bool) -> None:
    from omegaconf import OmegaConf

    from alexnet_lab.runs import CHECKED, _sweeps_what_the_check_reads

    config = OmegaConf.create({"hydra": {"overrides": {"task": task}, "sweeper": {"params": params}}})
    assert _sweeps_what_the_check_reads(config, CHECKED) is swept


@pytest.mark.parametrize(
    "task, swept",
    [
        (["data.val_size=100,200"], False),  # the metric check reads no data key: it still runs at the start
        (["optimized_metric=val/loss,train/loss"], True),
        (["trainer.limit_val_batches=0,1.0"], True),
        (["callbacks=default,[default,milestone_stop]"], True),
    ],
)
def test_the_search_metric_check_leaves_only_its_own_swept_keys_to_the_jobs(task: list[str], swept: bool) -> None:
    from omegaconf import OmegaConf

    from alexnet_lab.runs import SEARCH_CHECKED, _sweeps_what_the_check_reads

    config = OmegaConf.create({"hydra": {"overrides": {"task": task}, "sweeper": {"params": {}}}})
    assert _sweeps_what_the_check_reads(config, SEARCH_CHECKED) is swept


@pytest.mark.parametrize(
    "overrides, metric, names",
    [
        ([], "val/top1_err", "val/top1_err_best, val/top1_err, val/top5_err, val/loss, train/top1_err, train/loss"),
        (["trainer.limit_val_batches=0"], "train/loss", "train/top1_err, train/loss"),
        (["trainer.max_epochs=3", "trainer.check_val_every_n_epoch=5"], "train/top1_err", "train/top1_err, train/loss"),
        (["trainer.max_epochs=5", "trainer.check_val_every_n_epoch=5"], "val/loss", None),  # validates at epoch 5
        (
            ["experiment=activation_ablation"],
            "milestone/epochs",
            ("train/top1_err, train/loss, milestone/epochs, milestone/seconds"),
        ),  # validation off: the runs race to a training error
    ],
)
def test_a_search_may_optimise_what_its_runs_record(
    overrides: list[str], metric: str, names: str | None, composed
) -> None:
    """Figure 1's learning-rate search minimises epochs to the milestone; with validation off, val/* is never
    measured. Each list is what those runs record."""
    from alexnet_lab.runs import check_search_metric, searchable

    cfg = composed(*overrides, f"optimized_metric={metric}")
    check_search_metric(cfg)
    if names is not None:
        assert ", ".join(searchable(cfg)) == names


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["optimized_metric=val/top1_error"],
            (
                "optimized_metric=val/top1_error is not a figure these runs record; optimise one of val/top1_err_best, "
                "val/top1_err, val/top5_err, val/loss, train/top1_err, train/loss"
            ),
        ),
        (
            ["trainer.limit_val_batches=0"],
            (
                "optimized_metric=val/top1_err_best is never measured: trainer.limit_val_batches=0 turns validation off; "
                "turn it on, or optimise one of train/top1_err, train/loss"
            ),
        ),
        (
            ["trainer.max_epochs=3", "trainer.check_val_every_n_epoch=5"],
            (
                "optimized_metric=val/top1_err_best is never measured: trainer.check_val_every_n_epoch=5 with "
                "trainer.max_epochs=3 turns validation off"
            ),
        ),
        (
            ["optimized_metric=milestone/epochs"],  # no milestone callback: never recorded
            "optimized_metric=milestone/epochs is not a figure these runs record; optimise one of val/top1_err_best",
        ),
    ],
)
def test_a_search_on_a_figure_its_runs_never_record_is_refused(overrides: list[str], message: str, composed) -> None:
    from alexnet_lab.errors import ConfigError
    from alexnet_lab.runs import check_search_metric

    with pytest.raises(ConfigError) as err:
        check_search_metric(composed("hparams_search=cudaconvnet_optuna", *overrides))
    assert str(err.value).startswith(message)


def test_a_search_on_imagenets_val_split_without_a_minival_is_refused(composed) -> None:
    """With data.minival_per_class=0 val/* is the ILSVRC val split the runs report: a single run may follow it (the
    paper's schedule did), a search may not tune on it."""
    from alexnet_lab.errors import ConfigError
    from alexnet_lab.runs import check_nothing_chosen_on_test

    cfg = composed("data=imagenet", "data.minival_per_class=0")
    check_nothing_chosen_on_test(cfg, searching=False)
    with pytest.raises(ConfigError, match=r"optimized_metric=val/top1_err_best, which with data.minival_per_class=0 "
                       r"is the val split it reports: it would tune on it; hold out a minival"):  # fmt: skip
        check_nothing_chosen_on_test(cfg, searching=True)


@pytest.mark.parametrize(
    "record, metric, why",
    [
        (None, "val/top1_err_best", "/run/metrics.json says why"),
        ({"final": {"train/loss": 1.0}}, "val/top1_err_best", "the run finished but recorded no val/top1_err_best"),
        (
            {"final": {}},
            "milestone/epochs",
            ("the run finished but recorded no milestone/epochs (it never reached its milestone)"),
        ),
        ({"final": {"val/loss": float("nan")}}, "val/loss", "its val/loss is NaN"),
    ],
)
def test_a_trial_without_a_value_says_why(record: dict | None, metric: str, why: str) -> None:
    from alexnet_lab.train import trial_failure

    assert trial_failure(record, metric, "/run") == why


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["data.val_size=0", "test_ckpt=last", "scheduler=none"],
            (
                "the Optuna search minimises optimized_metric=val/top1_err_best, which with data.val_size=0 is the test "
                "split: it would tune on test; hold out a validation split (data.val_size>0)"
            ),
        ),
        (  # every trial would train, then fail for want of the figure; a swept key it does not read changes nothing
            ["optimized_metric=val/top1_error", "data.val_size=100,200"],
            (
                "optimized_metric=val/top1_error is not a figure these runs record; optimise one of val/top1_err_best, "
                "val/top1_err, val/top5_err, val/loss, train/top1_err, train/loss"
            ),
        ),
    ],
)
def test_an_optuna_search_that_cannot_work_is_refused_before_any_trial(
    overrides: list[str], message: str, cli_env: dict, tmp_path: Path
) -> None:
    """In a job the refusal would only fail that trial (and the search would fail each one alike): the sweep's own
    process refuses it first, in one line, and no job dir is made."""
    proc = run_cli("alexnet-train", "-m", "hparams_search=cudaconvnet_optuna", *overrides,
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", env=cli_env, cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert not list((tmp_path / "sweep").glob("*/.hydra"))  # no trial started


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer.lr=-1"], "optimizer.lr=-1: Invalid learning rate: -1"),
        (["optimizer.momentum=-0.5"], "optimizer.momentum=-0.5: Invalid momentum value: -0.5"),
        (["scheduler.factor=2.0"], "scheduler.factor=2.0: Factor should be < 1.0."),
        (["model=alexnet_cifar", "model.dropout=1.5"], "model.dropout=1.5: dropout=1.5 must be in [0, 1)"),
        (["trainer.devices=2", "data.batch_size=3"], "data.batch_size=3 (the global batch) does not split over 2"),
        (["model=alexnet"], "model AlexNet cannot take the data's 32x32 images ("),
        # val/* is the test split: choosing on it would report an optimistic test error
        (["data.val_size=0", "scheduler=none"], "test_ckpt=best with data.val_size=0 tests the epoch that did best on"),
        (["data.val_size=0", "test_ckpt=last"], "scheduler=plateau lowers the learning rate when val/top1_err stops"),
        (
            ["data.val_size=0", "test_ckpt=last", "scheduler=none", "callbacks=[default,early_stopping]"],
            "callbacks.early_stopping stops on val/top1_err, which with data.val_size=0 is the test split",
        ),
        (
            [
                "hparams_search=cudaconvnet_optuna",
                "hydra.mode=MULTIRUN",
                "data.val_size=0",
                "test_ckpt=last",
                "scheduler=none",
            ],
            "the Optuna search minimises optimized_metric=val/top1_err_best, which with data.val_size=0 is the test",
        ),
        (
            ["hparams_search=cudaconvnet_optuna", "hydra.mode=MULTIRUN", "optimized_metric=test/top1_err"],
            "the Optuna search minimises optimized_metric=test/top1_err: it would tune on the test split",
        ),
        (
            ["hparams_search=cudaconvnet_optuna", "hydra.mode=MULTIRUN", "optimized_metric=val/top1_error"],
            (
                "optimized_metric=val/top1_error is not a figure these runs record; optimise one of val/top1_err_best, "
                "val/top1_err, val/top5_err, val/loss, train/top1_err, train/loss"
            ),
        ),
    ],
)
def test_values_a_library_refuses_become_one_line_naming_the_key(
    overrides: list[str], message: str, composed, tmp_path: Path
) -> None:
    from omegaconf import open_dict, read_write

    from alexnet_lab.train import build

    cfg = composed(*overrides, f"data.path={tmp_path}", f"data.cache_dir={tmp_path}", "data.num_classes=10")
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as the task function gets it
    with pytest.raises(errors.ConfigError) as err:
        build(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.slow
def test_a_refused_value_exits_2_with_one_line_and_leaves_nothing(cli_env: dict, tmp_path: Path) -> None:
    write_batches(tmp_path / "data" / "cifar10", n_train=100, n_test=20)
    proc = run_cli("alexnet-train", *FAST, "optimizer.lr=-1", env=cli_env, cwd=tmp_path, check=False, process=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: optimizer.lr=-1: Invalid learning rate: -1"
    assert "Traceback" not in proc.stderr and leftovers(tmp_path / "logs") == []
