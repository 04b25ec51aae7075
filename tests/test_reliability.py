"""Runs that die, are stopped or are fed bad input: nothing lost, one override to resume, identical results."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, isolated_env, run_cli, write_batches

from alexnet_lab import runs
from alexnet_lab.checkpointing import AtomicCheckpointIO, CheckpointWriteError, atomic_torch_save

# 900 training images in batches of 50: 18 steps an epoch; dropout makes the global RNG matter on resume
RUN = [*FAST, "trainer.max_epochs=3", "seed=7", "trainer.deterministic=true", "model.dropout=0.3", "optimizer=adam"]
COMPARED = ("train/loss", "train/top1_err", "val/loss", "val/top1_err", "val/top5_err", "test/top1_err", "test/loss")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Generated data and one uninterrupted reference run."""
    tmp = tmp_path_factory.mktemp("lab")
    write_batches(tmp / "data" / "cifar10", n_train=1000, n_test=200)
    env = isolated_env(tmp)
    run_cli("alexnet-train", *RUN, "name=reference", env=env, cwd=tmp)
    return {"env": env, "tmp": tmp, "reference": record(tmp, "reference")}


def run_dir(tmp: Path, name: str) -> Path:
    (found,) = (tmp / "logs" / "train" / "runs").glob(f"*_{name}")
    return found


def record(tmp: Path, name: str) -> dict:
    return json.loads((run_dir(tmp, name) / "metrics.json").read_text())


def start(lab: dict, *args: str) -> subprocess.Popen:
    exe = str(Path(sys.executable).with_name("alexnet-train"))
    return subprocess.Popen(
        [exe, *RUN, *args], env=lab["env"], cwd=lab["tmp"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C reaches it even where the suite runs as a background job (SIGINT ignored); only a signal call here
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )  # fmt: skip


def wait_for_checkpoint(lab: dict, name: str, proc: subprocess.Popen, timeout: float = 240) -> Path:
    """The run dir of ``name`` once its first last.ckpt exists (the end of epoch 1)."""
    deadline = time.monotonic() + timeout
    while not (found := list((lab["tmp"] / "logs" / "train" / "runs").glob(f"*_{name}/checkpoints/last.ckpt"))):
        assert proc.poll() is None, f"run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    return found[0].parents[1]


def assert_same_results(got: dict, want: dict) -> None:
    # CPU, deterministic mode, same seed: the resumed run replays the same batches, augmentation and dropout
    for key in COMPARED:
        assert got["final"][key] == pytest.approx(want["final"][key], abs=1e-4), key
    assert (got["epochs"], got["steps"]) == (want["epochs"], want["steps"])


def test_same_seed_twice_gives_identical_metrics(lab: dict) -> None:
    run_cli("alexnet-train", *RUN, "name=again", env=lab["env"], cwd=lab["tmp"])
    again, reference = record(lab["tmp"], "again"), lab["reference"]
    assert again["final"] == reference["final"] and again["seed"] == reference["seed"] == 7


@pytest.mark.slow
def test_sigkill_after_the_first_checkpoint_then_resume(lab: dict) -> None:
    proc = start(lab, "name=killed")
    folder = wait_for_checkpoint(lab, "killed", proc)
    deadline = time.monotonic() + 60  # the record follows the checkpoint at the same epoch's end
    while "epochs" not in record(lab["tmp"], "killed") and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = record(lab["tmp"], "killed")
    assert killed["status"] == "running"  # died without a word, as a killed job does ...
    assert killed["epochs"] >= 1 and killed["steps"] >= 18 and killed["seconds"] > 0  # ... but says how far it got
    run_cli("alexnet-train", "ckpt_path=last", "name=killed", env=lab["env"], cwd=lab["tmp"])
    resumed = record(lab["tmp"], "killed")
    assert resumed["status"] == "finished" and resumed["resumed_from"].endswith(".ckpt")
    assert_same_results(resumed, lab["reference"])
    # the same TensorBoard run goes on, and the first .hydra/ is kept as it was
    assert len(list(folder.glob("events.out.tfevents.*"))) >= 2
    assert "name=killed" in (folder / ".hydra" / "overrides.yaml").read_text()
    assert len(list((folder / ".hydra").glob("resume_*/overrides.yaml"))) == 1


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_matches(lab: dict) -> None:
    proc = start(lab, "name=preempted")
    folder = wait_for_checkpoint(lab, "preempted", proc)
    proc.send_signal(signal.SIGTERM)  # during epoch 2: finish the batch, save, exit 143
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        f"interrupted: saved {folder}/checkpoints/last.ckpt; resume with alexnet-train ckpt_path=last name=preempted"
    )
    stopped = record(lab["tmp"], "preempted")
    assert stopped["status"] == "interrupted" and 18 <= stopped["steps"] < lab["reference"]["steps"]
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == stopped["steps"]
    run_cli("alexnet-train", "ckpt_path=last", "name=preempted", env=lab["env"], cwd=lab["tmp"])
    assert_same_results(record(lab["tmp"], "preempted"), lab["reference"])


@pytest.mark.slow
def test_ctrl_c_finishes_the_batch_saves_and_says_how_to_resume(lab: dict) -> None:
    proc = start(lab, "name=ctrlc")
    folder = wait_for_checkpoint(lab, "ctrlc", proc)
    proc.send_signal(signal.SIGINT)  # during epoch 2, as a terminal's Ctrl-C
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Ctrl-C: stopping after this batch and saving a checkpoint" in out + err
    assert err.strip().splitlines()[-1] == (
        f"interrupted: saved {folder}/checkpoints/last.ckpt; resume with alexnet-train ckpt_path=last name=ctrlc"
    )
    stopped = record(lab["tmp"], "ctrlc")
    assert stopped["status"] == "interrupted" and 18 <= stopped["steps"] < lab["reference"]["steps"]
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == stopped["steps"] and "optimizer_states" in ckpt  # whole: it resumes the run


def test_last_ckpt_is_the_newest_epoch_even_when_it_is_not_the_best(lab: dict) -> None:
    """Ranking checkpoints on the highest error makes the first epoch the best one for good: last.ckpt must still
    follow every epoch, and with val = test (val_size=0) testing it reproduces the final epoch's val error."""
    run_cli("alexnet-train", *RUN, "name=worst", "callbacks.model_checkpoint.mode=max", "data.val_size=0",
            "test_ckpt=last", "scheduler=none", env=lab["env"], cwd=lab["tmp"])  # fmt: skip
    folder, result = run_dir(lab["tmp"], "worst"), record(lab["tmp"], "worst")
    last = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (best,) = [p for p in (folder / "checkpoints").glob("epoch*.ckpt")]
    assert last["epoch"] == 2 and last["global_step"] == result["steps"] == 3 * 20  # the third and final epoch
    assert best.name.startswith("epoch001-")  # the "best" (worst) checkpoint is kept as before: the first epoch
    assert result["test_ckpt"].endswith("last.ckpt")
    assert result["final"]["test/top1_err"] == pytest.approx(result["final"]["val/top1_err"], abs=1e-4)


@pytest.mark.slow
def test_a_kill_after_an_epoch_that_was_not_the_best_resumes_from_that_epoch(lab: dict) -> None:
    """With the first epoch the best one for good (ranked on the highest error), a run killed later resumes from
    the newest epoch: the resumed process trains only the epochs that were lost."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = start(lab, "name=notbest", "callbacks.model_checkpoint.mode=max")
    folder = wait_for_checkpoint(lab, "notbest", proc)
    last = folder / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while torch.load(last, map_location="cpu", weights_only=True)["epoch"] < 1:  # the second epoch is saved
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    (best,) = (folder / "checkpoints").glob("epoch*.ckpt")
    assert saved >= 1 and best.name.startswith("epoch001-")
    killed = record(lab["tmp"], "notbest")  # no SIGTERM, no interrupted record: what the last epoch end wrote
    assert killed["status"] == "running" and killed["epochs"] >= saved and killed["seconds"] > 0
    run_cli("alexnet-train", "ckpt_path=last", "name=notbest", env=lab["env"], cwd=lab["tmp"])
    resumed = record(lab["tmp"], "notbest")
    assert resumed["status"] == "finished" and resumed["resumed_from"] == str(last)
    assert resumed["seconds"] > killed["seconds"]  # the killed attempt's training time is kept, the resumed one's added
    files = sorted(folder.glob("events.out.tfevents.*"))  # events.out.tfevents.<time>.<host>.<pid>.<n>
    killed_pid = files[0].name.split(".")[-2]
    trained_again = 0
    for path in (f for f in files if f.name.split(".")[-2] != killed_pid):  # the resumed process's files
        events = EventAccumulator(str(path))
        events.Reload()
        trained_again += len(events.Scalars("train/loss")) if "train/loss" in events.Tags()["scalars"] else 0
    assert trained_again == 3 - (saved + 1)  # only the lost epochs were trained again


@pytest.mark.slow
def test_a_sweep_killed_midway_and_started_again_runs_every_job_once(lab: dict) -> None:
    """The same multirun started again in its sweep dir keeps finished jobs, resumes the interrupted one from its
    last.ckpt, and runs the rest."""
    sweep = lab["tmp"] / "sweep"
    args = ["-m", *(a for a in RUN if not a.startswith("seed=")), "trainer.max_epochs=4", "seed=1,2,3",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    exe = str(Path(sys.executable).with_name("alexnet-train"))
    proc = subprocess.Popen(
        [exe, *args], env=lab["env"], cwd=lab["tmp"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not (sweep / "1_seed-2" / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # during the second job
    proc.wait()
    first = (sweep / "0_seed-1" / "metrics.json").read_text()
    assert json.loads(first)["status"] == "finished"
    assert json.loads((sweep / "1_seed-2" / "metrics.json").read_text())["status"] == "running"
    assert not (sweep / "2_seed-3").exists()

    proc = run_cli("alexnet-train", *args, env=lab["env"], cwd=lab["tmp"])
    assert "this job finished earlier with the same config: kept as it is" in proc.stdout + proc.stderr
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert sorted(records) == ["0_seed-1", "1_seed-2", "2_seed-3"]
    assert all(r["status"] == "finished" and r["epochs"] == 4 for r in records.values())
    assert (sweep / "0_seed-1" / "metrics.json").read_text() == first  # kept, not run again
    assert records["1_seed-2"]["resumed_from"] == str(sweep / "1_seed-2" / "checkpoints" / "last.ckpt")
    assert records["2_seed-3"]["resumed_from"] is None
    assert (sweep / "report.md").exists()
    # a third start changes nothing, and one with another config is refused for that job
    changed = run_cli("alexnet-train", *args, "optimizer.lr=0.002", env=lab["env"], cwd=lab["tmp"])
    assert "holds a run of another config (finished); start the sweep in a new hydra.sweep.dir" in (
        changed.stdout + changed.stderr
    )
    assert (sweep / "0_seed-1" / "metrics.json").read_text() == first
    assert "optimizer.lr" not in (sweep / "0_seed-1" / ".hydra" / "overrides.yaml").read_text()  # its own, as it was
    assert len(list((sweep / "0_seed-1" / ".hydra").glob("rerun_*/overrides.yaml"))) == 2


def test_resume_with_another_network_is_refused(lab: dict) -> None:
    ckpt = run_dir(lab["tmp"], "reference") / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    proc = run_cli(
        "alexnet-train", *RUN, "model=alexnet_cifar", f"ckpt_path={ckpt}", env=lab["env"], cwd=lab["tmp"], check=False
    )
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: checkpoint {ckpt} holds CudaConvnet18pct with num_classes=10, which does not fit")
    assert line.endswith("use the model= and data settings it was trained with")
    assert ckpt.read_bytes() == before


def test_resume_of_an_unknown_run_is_refused(lab: dict) -> None:
    runs = sorted((lab["tmp"] / "logs" / "train" / "runs").iterdir())
    proc = run_cli("alexnet-train", "ckpt_path=last", "name=nosuchrun", env=lab["env"], cwd=lab["tmp"], check=False)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: ckpt_path=last found no checkpoint of a run named 'nosuchrun'")
    )
    assert sorted((lab["tmp"] / "logs" / "train" / "runs").iterdir()) == runs  # nothing new left behind


def test_nan_loss_stops_the_run_and_marks_it_failed(lab: dict) -> None:
    proc = run_cli(
        "alexnet-train",
        *RUN,
        "optimizer=sgd",
        "optimizer.lr=1e5",
        "name=diverged",
        env=lab["env"],
        cwd=lab["tmp"],
        check=False,
    )
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: train/loss is nan in epoch 0: training diverged; lower optimizer.lr (now 100000)")
    failed = record(lab["tmp"], "diverged")
    assert failed["status"] == "failed" and failed["error"] == line.removeprefix("error: ")
    assert not (run_dir(lab["tmp"], "diverged") / "checkpoints").exists()  # no NaN weights saved


def test_unwritable_log_dir(lab: dict, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_cli("alexnet-train", *RUN, f"paths.log_dir={blocker}/logs", env=lab["env"], cwd=lab["tmp"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot write run dirs under {blocker}/logs/train/runs; set paths.log_dir (or ALEXNET_LOG_DIR) to a writable folder"
    ]


def test_full_disk_while_checkpointing(lab: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # the disk fills up during the third checkpoint write (the second epoch's first save), halfway through the file
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        if ".ckpt." in str(getattr(f, "name", f)):
            calls.append(f)
            if len(calls) == 3:
                f.write(b"half a checkpoint")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    proc = run_cli("alexnet-train", *RUN, "name=fulldisk", env=lab["env"], cwd=lab["tmp"], check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    folder = run_dir(lab["tmp"], "fulldisk")
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: could not write checkpoint {folder}/checkpoints/")
    assert line.endswith("(No space left on device); free some space, earlier checkpoints are untouched")
    files = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert "last.ckpt" in files and not any(f.endswith(".tmp") for f in files)
    for name in files:  # the first epoch's checkpoints are whole and loadable
        assert torch.load(folder / "checkpoints" / name, map_location="cpu", weights_only=True)["epoch"] == 0
    assert record(lab["tmp"], "fulldisk")["status"] == "failed"


def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, target)

    def torn_write(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", torn_write)
    with pytest.raises(CheckpointWriteError, match="could not write checkpoint .*last.ckpt .*free some space"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.slow
def test_ddp_on_cpu_inside_a_multirun_agrees_with_one_process(lab: dict) -> None:
    # one sweep, two jobs: one process, and two spawned gloo processes splitting each global batch of 50.
    # Dropout off: each rank draws its own masks, which one process cannot reproduce. SGD: Adam divides by the
    # root of the squared gradients, which magnifies the all-reduce's rounding where gradients are tiny (conv1's).
    # At cuda-convnet's epsW (0.001): the default 0.01 diverges on the 18pct's 0-255 inputs, and a diverging run
    # magnifies the rounding too.
    base = [
        *(a for a in RUN if a != "optimizer=adam"),
        "trainer.max_epochs=2",
        "model.dropout=0.0",
        "optimizer.lr=0.001",
    ]
    run_cli(
        "alexnet-train", *base, "-m", "trainer=default,ddp", env=lab["env"], cwd=lab["tmp"], timeout=600, process=True
    )
    (sweep,) = (lab["tmp"] / "logs" / "train" / "multiruns").iterdir()
    one, ddp = (
        json.loads((sweep / job / "metrics.json").read_text()) for job in ("0_trainer-default", "1_trainer-ddp")
    )
    assert one["config"]["trainer"]["devices"] == 1 and ddp["config"]["trainer"]["devices"] == 2
    assert ddp["status"] == one["status"] == "finished"
    assert ddp["steps"] == one["steps"] == 2 * 18 and ddp["epochs"] == 2
    # the same samples, augmentation and weights up to float summation order in the all-reduce
    # (measured: losses equal to 4e-7, errors identical)
    for key in ("train/loss", "val/loss", "test/loss"):
        assert ddp["final"][key] == pytest.approx(one["final"][key], abs=1e-4), key
    for key in ("train/top1_err", "val/top1_err", "test/top1_err", "val/top5_err"):
        assert ddp["final"][key] == pytest.approx(one["final"][key], abs=1.0), key  # at most one image in 100


def test_a_failed_sweep_job_runs_again_from_the_start_whatever_its_config(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from alexnet_lab.errors import ConfigError
    from alexnet_lab.runs import config_fingerprint, previous_attempt

    job = tmp_path / "3_seed-4"
    (job / "checkpoints").mkdir(parents=True)
    (job / "checkpoints" / "last.ckpt").write_bytes(b"from the failed attempt")
    (job / "events.out.tfevents.1.host.1.0").write_bytes(b"curves of the failed attempt")
    cfg = OmegaConf.create({"seed": 4, "model": {"norm": "rnorm"}})
    (job / "metrics.json").write_text(json.dumps({"status": "failed", "seed": 4, "fingerprint": "another config"}))
    assert previous_attempt(cfg, job) == (None, None)
    assert not (job / "checkpoints").exists() and not list(job.glob("events.out.tfevents.*"))
    # a finished run is kept only for the same config; of another config, it is refused, not overwritten
    (job / "metrics.json").write_text(
        json.dumps({"status": "finished", "seed": 4, "fingerprint": config_fingerprint(cfg)})
    )
    assert previous_attempt(cfg, job)[0]["status"] == "finished"
    cfg.model.norm = "none"
    with pytest.raises(ConfigError, match="holds a run of another config"):
        previous_attempt(cfg, job)


@pytest.mark.parametrize("value", ["runs/plain-name_1", "multiruns/x/0_model.activation=tanh,optimizer.lr=0.002,seed=1",
                                   "a dir/with 'quotes'"])  # fmt: skip
def test_the_resume_hint_pastes_back_as_the_same_value(value: str) -> None:
    """The hint printed on SIGTERM, split by a shell and parsed by Hydra, gives back the run dir it names."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (argument,) = shlex.split(runs.override("run_dir", value))
    (parsed,) = OverridesParser.create().parse_overrides([argument])
    assert (parsed.key_or_group, parsed.value()) == ("run_dir", value)
