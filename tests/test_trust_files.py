"""Trust II: every file read from elsewhere is data. Each attack builds its crafted file or dir here and checks that
nothing of it runs, nothing is written through it, and the user gets one line naming it."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
import torch
from conftest import FAST, isolated_env, run_cli, write_batches
from omegaconf import OmegaConf
from PIL import Image

from alexnet_lab import errors, runs
from alexnet_lab.checkpointing import newest_checkpoint
from alexnet_lab.data import CIFAR10DataModule, DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("trust2")
    write_batches(tmp / "data" / "cifar10", n_train=300, n_test=60)
    env = isolated_env(tmp)
    run_cli("alexnet-train", *FAST, "trainer.max_epochs=1", "name=honest", "seed=3", env=env, cwd=tmp)
    (run,) = (tmp / "logs" / "train" / "runs").glob("*_honest")
    return {"tmp": tmp, "env": env, "run": run}


def copy_run(trained: dict, name: str) -> Path:
    copy = trained["tmp"] / "copies" / name
    shutil.copytree(trained["run"], copy)
    return copy


# 1. a checkpoint's stored config


@pytest.mark.parametrize("script", ["alexnet-eval", "alexnet-predict"])
def test_a_checkpoint_whose_config_names_a_foreign_class_is_refused(trained: dict, script: str) -> None:
    """weights_only-clean (plain values only), but its config would call numpy.savetxt when instantiated."""
    marker = trained["tmp"] / f"written-by-{script}.txt"
    ckpt = torch.load(trained["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["run_config"]["model"]["num_classes"] = {
        "_target_": "numpy.savetxt", "fname": str(marker), "X": [1.0]}  # fmt: skip
    crafted = trained["tmp"] / f"crafted-config-{script}.ckpt"
    torch.save(ckpt, crafted)
    proc = run_cli(script, f"ckpt_path={crafted}", env=trained["env"], cwd=trained["tmp"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: checkpoint {crafted}: model.num_classes._target_='numpy.savetxt' is not a class this project's "
        "configs offer there; refused, nothing from it was run"
    )
    assert not marker.exists()


# 2. a run dir's stored overrides


@pytest.mark.parametrize(
    "override, says",
    [
        ("+callbacks.notes={_target_: numpy.savetxt, fname: MARKER, X: [1.0]}",
         "callbacks.notes._target_='numpy.savetxt' is not a class this project's configs offer there"),
        ("callbacks.model_checkpoint.dirpath=ELSEWHERE", "would move the run's files or change how it runs; refused"),
        ("model.dropout=${oc.env:HOME}", "is an interpolation; refused"),
    ],
)  # fmt: skip
def test_a_run_dirs_stored_overrides_are_data_on_resume(trained: dict, override: str, says: str) -> None:
    run = copy_run(trained, f"overrides-{abs(hash(override))}")
    marker, elsewhere = trained["tmp"] / "written-on-resume.txt", trained["tmp"] / "elsewhere"
    stored = OmegaConf.load(run / ".hydra" / "overrides.yaml")
    text = override.replace("MARKER", str(marker)).replace("ELSEWHERE", str(elsewhere))
    OmegaConf.save([*stored, text], run / ".hydra" / "overrides.yaml")
    proc = run_cli("alexnet-train", "ckpt_path=last", f"run_dir={run}", "trainer.max_epochs=2",
                   env=trained["env"], cwd=trained["tmp"], check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {run}/.hydra/overrides.yaml: ") and says in line
    assert not marker.exists() and not elsewhere.exists()
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"  # the run as it was


# 4-6. sweeps and run dirs: failed jobs, two processes, copies


def test_a_failed_job_that_left_no_checkpoints_runs_again(tmp_path: Path) -> None:
    job = tmp_path / "0_seed-1"
    job.mkdir()
    (job / "metrics.json").write_text(json.dumps({"status": "failed", "seed": 1, "error": "before any checkpoint"}))
    assert runs.previous_attempt(OmegaConf.create({"seed": 1}), job) == (None, None)


@pytest.mark.parametrize("content", ["[1, 2, 3]", "{half a record", "\x00\xff"])
def test_an_unreadable_record_is_set_aside_and_the_job_runs_again(tmp_path: Path, content: str) -> None:
    job = tmp_path / "0_seed-1"
    (job / "checkpoints").mkdir(parents=True)
    (job / "metrics.json").write_text(content)
    assert runs.previous_attempt(OmegaConf.create({"seed": None}), job) == (None, None)
    (aside,) = job.glob("metrics.unreadable-*.json")
    assert aside.read_text() == content and not (job / "metrics.json").exists()  # nothing lost


def test_a_job_dir_another_process_holds_is_left_alone(trained: dict, tmp_path: Path) -> None:
    """Two multiruns into one sweep dir: the job the first one is running is skipped by the second, which neither
    marks it failed nor resumes from its checkpoint; the other jobs run."""
    sweep = tmp_path / "sweep"
    busy = sweep / "0_seed-1"
    busy.mkdir(parents=True)
    running = {"status": "running", "seed": 1, "fingerprint": "whatever the first process wrote"}
    (busy / "metrics.json").write_text(json.dumps(running))
    with runs.run_dir_lock(busy):
        with pytest.raises(errors.JobBusy, match=f"{busy} is being run by another process"), runs.run_dir_lock(busy):
            pass
        run_cli("alexnet-train", "-m", *FAST, "trainer.max_epochs=1", "seed=1,2", f"hydra.sweep.dir={sweep}",
                env=trained["env"], cwd=trained["tmp"])  # fmt: skip
    assert json.loads((busy / "metrics.json").read_text()) == running
    assert not (busy / "checkpoints").exists()
    assert json.loads((sweep / "1_seed-2" / "metrics.json").read_text())["status"] == "finished"


def test_a_resume_of_a_run_another_process_holds_writes_nothing_there(trained: dict) -> None:
    """``ckpt_path=last`` of a run dir whose lock is held: one line, exit 2, and not even Hydra's .hydra/resume_*
    folder is added to the running run's dir."""
    run = copy_run(trained, "held")
    before = sorted(p.name for p in (run / ".hydra").iterdir())
    with runs.run_dir_lock(run):
        proc = run_cli("alexnet-train", "ckpt_path=last", f"run_dir={run}", env=trained["env"], cwd=trained["tmp"],
                       check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: {run} is being run by another process (pid {os.getpid()}); it is left to that one"
    )
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == before


def test_the_newest_checkpoint_is_chosen_by_what_it_holds(tmp_path: Path) -> None:
    """A copied run dir: its last.ckpt is stale (epoch 0), last-v1.ckpt holds epoch 1; by name alone the stale one
    would win."""
    for name, epoch, step in (("last.ckpt", 0, 10), ("last-v1.ckpt", 1, 20), ("epoch001-top1err50.00.ckpt", 0, 10)):
        torch.save({"epoch": epoch, "global_step": step, "state_dict": {}}, tmp_path / name)
    assert newest_checkpoint(tmp_path) == tmp_path / "last-v1.ckpt"
    torch.save({"epoch": 1, "global_step": 20, "state_dict": {}}, tmp_path / "last.ckpt")
    assert newest_checkpoint(tmp_path) == tmp_path / "last.ckpt"  # same state: a last* file, then the name
    assert newest_checkpoint(tmp_path / "none") is None


def test_a_moved_run_dir_resumes_where_it_stopped_and_leaves_no_stale_files(trained: dict) -> None:
    run = copy_run(trained, "moved")
    stale = run / "checkpoints" / ".last.ckpt.99999.tmp"
    stale.write_bytes(b"half of a checkpoint a killed save left")
    run_cli("alexnet-train", "ckpt_path=last", f"run_dir={run}", "trainer.max_epochs=2",
            env=trained["env"], cwd=trained["tmp"])  # fmt: skip
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "finished" and record["epochs"] == 2 and record["steps"] == 2 * record["steps"] // 2
    assert record["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in names and not any(n.startswith("last-v") for n in names) and not stale.exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # the second epoch


# 7. bombs


def png_header(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims width x height pixels (its data holds one row: it is never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_an_image_claiming_billions_of_pixels_is_refused_or_skipped(tmp_path: Path) -> None:
    from alexnet_lab.data.imagenet.decode import load_rgb
    from alexnet_lab.data.imagenet.workers import ImageFiles

    bomb = tmp_path / "n01440764_1.JPEG"
    bomb.write_bytes(png_header(50_000, 50_000))
    with pytest.raises(DataError, match=rf"^cannot decode image {bomb} \(.*exceeds limit.*skip_bad_images=true$"):
        load_rgb(str(bomb), 256)
    almost = tmp_path / "n01440764_2.JPEG"
    almost.write_bytes(png_header(10_000, 10_000))  # 100 M pixels: PIL only warns; refused too
    with pytest.raises(DataError, match="could be decompression bomb"):
        load_rgb(str(almost), 256)
    files = ImageFiles([(str(bomb), 0)], size=32, crop_size=28, skip_bad=True)
    assert files[0] == str(bomb)  # skipped, named
    tree = tmp_path / "cifar"
    write_batches(tmp_path / "unused")
    for split in ("train", "test"):
        (tree / split / "cat").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tree / split / "cat" / "0.png")
    (tree / "train" / "cat" / "1.png").write_bytes(png_header(50_000, 50_000))
    with pytest.raises(DataError, match=r"^cannot decode image .*1\.png \(Image size \(2500000000 pixels\) exceeds"):
        CIFAR10DataModule(path=str(tree), cache_dir=str(tmp_path / "cache")).prepare_data()


def test_an_archive_member_claiming_gigabytes_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A few hundred bytes of .tar.gz whose header announces a 3 GB data_batch_1: refused from the header."""
    member = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    member.size = 3 * 2**30
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(gzip.compress(member.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024))
    assert archive.stat().st_size < 1000
    with pytest.raises(DataError) as err:
        CIFAR10DataModule(path=str(archive), cache_dir=str(tmp_path / "cache")).prepare_data()
    assert str(err.value) == (
        f"archive {archive}: member cifar-10-batches-py/data_batch_1 claims 3,221,225,472 bytes, more than any "
        "CIFAR-10 file (64 MB); it was not read: use the official archive"
    )


# 8. lines that are one line


def test_a_real_full_disk_during_a_checkpoint_write_is_one_line(tmp_path: Path) -> None:
    """Not a faked OSError: the process may not grow a file past 64 KB (RLIMIT_FSIZE), so torch's own zip writer
    fails the way a full disk makes it fail, with a RuntimeError."""
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")
    script = (
        "import resource, signal, sys, torch\n"
        "from alexnet_lab.checkpointing import atomic_torch_save, CheckpointWriteError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "try:\n"
        f"    atomic_torch_save({{'w': torch.zeros(100_000)}}, __import__('pathlib').Path({str(target)!r}))\n"
        "except CheckpointWriteError as err:\n"
        "    print(err); sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == (
        f"could not write checkpoint {target} (File too large); free some space, earlier checkpoints are untouched"
    )
    assert target.read_bytes() == b"the previous checkpoint" and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize(
    "args, line",
    [
        (["seed=-1"], "error: seed=-1 is not an integer in 0..4294967295; give e.g. seed=0, or leave it out"),
        (["data.std=0", "data.mean=pixel"], ("error: data.std=0: it divides the inputs, so each value must be a "
                                             "positive number; e.g. data.std=0.00392156862745098 keeps 0-255 pixel units")),
    ],
)  # fmt: skip
def test_values_that_used_to_be_tracebacks_or_misleading_are_one_line(
    trained: dict, args: list[str], line: str
) -> None:
    proc = run_cli("alexnet-train", *FAST, *args, env=trained["env"], cwd=trained["tmp"], check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == line and "Traceback" not in proc.stderr


def test_a_stored_seed_out_of_range_or_a_new_learning_rate_on_resume_is_one_line(trained: dict) -> None:
    run = copy_run(trained, "seed")
    record = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**record, "seed": 10**30}))
    proc = run_cli("alexnet-train", "ckpt_path=last", f"run_dir={run}", env=trained["env"], cwd=trained["tmp"],
                   check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: {run}/metrics.json holds seed={10**30}, not one in 0..4294967295; give seed=<the run's seed>"
    )
    proc = run_cli("alexnet-train", "ckpt_path=last", f"run_dir={run}", "optimizer.lr=0.5",
                   env=trained["env"], cwd=trained["tmp"], check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: optimizer.lr=0.5: a resumed run restores its optimizer and schedule from the checkpoint, so this "
        "would be ignored; resume without it (or start a new run)"
    )


def test_a_meta_bin_that_is_not_a_tensor_file_is_one_line(tmp_path: Path) -> None:
    from alexnet_lab.data.imagenet.source import devkit_names

    (tmp_path / "meta.bin").write_bytes(b"PK\x03\x04 not what torchvision wrote")
    with pytest.raises(DataError, match=rf"^{tmp_path}/meta.bin is not the class list torchvision writes from the"):
        devkit_names(tmp_path)
    import pickle

    (tmp_path / "meta.bin").write_bytes(pickle.dumps({"a": 1}))  # a pickle, but not a tensor file of (dict, list)
    with pytest.raises(DataError, match="delete it to rebuild it from the devkit archive"):
        devkit_names(tmp_path)


def test_nan_weights_are_never_checkpointed_by_a_mid_epoch_validation(trained: dict) -> None:
    proc = run_cli("alexnet-train", *FAST, "optimizer=sgd", "optimizer.lr=1e9", "+trainer.val_check_interval=2",
                   "name=midnan", env=trained["env"], cwd=trained["tmp"], check=False)  # fmt: skip
    assert proc.returncode == 2
    assert re.match(r"error: train/loss is nan in epoch \d: training diverged", proc.stderr.strip().splitlines()[-1])
    (run,) = (trained["tmp"] / "logs" / "train" / "runs").glob("*_midnan")
    for ckpt in (run / "checkpoints").glob("*.ckpt") if (run / "checkpoints").exists() else []:
        weights = torch.load(ckpt, weights_only=True)["state_dict"].values()
        assert all(torch.isfinite(w).all() for w in weights), ckpt.name  # saved before the loss went NaN


def test_a_pasted_path_to_an_old_sweep_job_dir_works_unquoted(trained: dict) -> None:
    """Job dirs of sweeps made before they were named to paste (``0_model=x,seed=1``): Hydra's grammar would split
    the path at ``=`` and ``,``; the commands quote it for Hydra."""
    old = trained["tmp"] / "multiruns" / "0_model.norm=rnorm,seed=1"
    shutil.copytree(trained["run"], old)
    proc = run_cli("alexnet-eval", f"ckpt_path={old}/checkpoints/last.ckpt", env=trained["env"], cwd=trained["tmp"])
    (record,) = (trained["tmp"] / "logs" / "eval" / "runs").glob("*/metrics.json")
    assert json.loads(record.read_text())["ckpt_path"] == f"{old}/checkpoints/last.ckpt", proc.stderr[-500:]


def test_a_resumed_run_counts_the_seconds_of_its_earlier_attempt(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "interrupted", "seconds": 3144.6}))
    assert runs.earlier_seconds(tmp_path) == 3144.6
    for record in ({"status": "finished", "seconds": 10.0}, {"status": "interrupted", "seconds": -1}, [1]):
        (tmp_path / "metrics.json").write_text(json.dumps(record))
        assert runs.earlier_seconds(tmp_path) == 0.0
    (tmp_path / "metrics.json").write_text("{broken")
    assert runs.earlier_seconds(tmp_path) == 0.0


# Trust II, second round: each attack an independent review found, built here


def crafted_checkpoint(trained: dict, name: str, change) -> Path:
    ckpt = torch.load(trained["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    change(ckpt)
    path = trained["tmp"] / f"{name}.ckpt"
    torch.save(ckpt, path)
    return path


def test_a_class_hidden_in_a_tuple_is_refused(trained: dict) -> None:
    marker = trained["tmp"] / "written-through-a-tuple.txt"

    def hide(ckpt: dict) -> None:  # torch's weights_only loader allows tuples; Hydra builds their items too
        ckpt["hyper_parameters"]["run_config"]["model"]["x"] = (
            {"_target_": "numpy.savetxt", "_args_": [str(marker), [1]]},
        )

    crafted = crafted_checkpoint(trained, "tuple", hide)
    proc = run_cli("alexnet-eval", f"ckpt_path={crafted}", env=trained["env"], cwd=trained["tmp"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not marker.exists()
    assert "model.x.*._target_='numpy.savetxt' is not a class this project's configs offer there" in proc.stderr


def test_a_checkpoints_own_bookkeeping_cannot_delete_files_elsewhere(trained: dict) -> None:
    """The ModelCheckpoint state in a checkpoint names the "worse" files a later save deletes: named elsewhere (a
    protocol Lightning does not check), they are not restored, and nothing outside the run's folder is removed."""
    victim = trained["tmp"] / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "data.txt").write_text("precious")

    def plant(ckpt: dict) -> None:
        far = f"local://{victim}"
        states = [s for s in ckpt["callbacks"].values() if "best_model_path" in s]
        assert len(states) == 2  # the best checkpoint's ModelCheckpoint and last.ckpt's
        for state in states:
            state.pop("dirpath")
            state.update(best_k_models={far: torch.tensor(1e9)}, kth_best_model_path=far, kth_value=torch.tensor(1e9),
                         best_model_score=torch.tensor(1e9), best_model_path=far, last_model_path=far)  # fmt: skip

    crafted = crafted_checkpoint(trained, "bookkeeping", plant)
    run_cli("alexnet-train", *FAST, "trainer.max_epochs=2", f"ckpt_path={crafted}", "name=bookkeeping",
            env=trained["env"], cwd=trained["tmp"])  # fmt: skip
    assert (victim / "sub" / "data.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "override",
    ["callbacks.model_checkpoint={dirpath: ELSEWHERE}", "logger.tensorboard={save_dir: ELSEWHERE}",
     "trainer={default_root_dir: ELSEWHERE}", "callbacks.model_checkpoint.filename=../../OUT_best",
     "logger.tensorboard.name=../OUT_tb", "data.cache_dir=ELSEWHERE"],
)  # fmt: skip
def test_stored_overrides_cannot_move_a_runs_files_in_any_form(trained: dict, override: str) -> None:
    run = copy_run(trained, f"move-{abs(hash(override))}")
    elsewhere = trained["tmp"] / f"elsewhere-{abs(hash(override))}"
    stored = OmegaConf.load(run / ".hydra" / "overrides.yaml")
    OmegaConf.save([*stored, override.replace("ELSEWHERE", str(elsewhere))], run / ".hydra" / "overrides.yaml")
    proc = run_cli("alexnet-train", "ckpt_path=last", f"run_dir={run}", "trainer.max_epochs=2", env=trained["env"],
                   cwd=trained["tmp"], check=False)  # fmt: skip
    assert proc.returncode == 2 and "would move the run's files or change how it runs; refused" in proc.stderr
    assert not elsewhere.exists() and not (run.parent / "OUT_best.ckpt").exists()


def test_an_interpolation_anywhere_in_a_checkpoints_config_is_refused(trained: dict) -> None:
    made = trained["tmp"] / "made-by-a-resolver"

    def plant(ckpt: dict) -> None:
        ckpt["hyper_parameters"]["run_config"]["task_name"] = "${run_dir_for:" + str(made) + ",a,b,c}"

    crafted = crafted_checkpoint(trained, "resolver", plant)
    proc = run_cli("alexnet-eval", f"ckpt_path={crafted}", env=trained["env"], cwd=trained["tmp"], check=False)
    assert proc.returncode == 2 and "task_name=" in proc.stderr and "is an interpolation; refused" in proc.stderr
    assert not made.exists()


@pytest.mark.parametrize("name", ["train.log", "checkpoints", "hparams.yaml"])
def test_a_run_dir_with_a_link_where_the_run_writes_is_refused(trained: dict, name: str) -> None:
    run = copy_run(trained, f"linked-{name}")
    target = trained["tmp"] / f"outside-{name}"
    (run / name).rename(target)
    (run / name).symlink_to(target)
    before = sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_text()
    proc = run_cli("alexnet-train", "ckpt_path=last", f"run_dir={run}", "trainer.max_epochs=2", env=trained["env"],
                   cwd=trained["tmp"], check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert (sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_text()) == before


def test_eval_keeps_derived_files_here_and_downloads_nothing(trained: dict) -> None:
    elsewhere = trained["tmp"] / "cache-elsewhere"
    moved = crafted_checkpoint(trained, "cache", lambda c: c["hyper_parameters"]["run_config"]["data"].update(
        cache_dir=str(elsewhere)))  # fmt: skip
    run_cli("alexnet-eval", f"ckpt_path={moved}", env=trained["env"], cwd=trained["tmp"])
    assert not elsewhere.exists() and list((trained["tmp"] / "data" / "cifar10").glob("cifar10-uint8-*.pt"))
    weights = crafted_checkpoint(trained, "weights", lambda c: c["hyper_parameters"]["run_config"]["model"].update(
        weights="IMAGENET1K_V1"))  # fmt: skip
    proc = run_cli("alexnet-eval", f"ckpt_path={weights}", env=trained["env"], cwd=trained["tmp"], check=False)
    assert (
        proc.returncode == 2
        and "model.weights='IMAGENET1K_V1'" in proc.stderr
        and "nothing is downloaded" in proc.stderr
    )


def test_a_malformed_checkpoint_is_one_line(trained: dict) -> None:
    for name, change in (("hp-list", lambda c: c.update(hyper_parameters=[1])),
                         ("state-list", lambda c: c.update(state_dict=[1])),
                         ("classes", lambda c: c["hyper_parameters"]["run_config"]["data"].update(num_classes="ten"))):  # fmt: skip
        crafted = crafted_checkpoint(trained, name, change)
        proc = run_cli("alexnet-eval", f"ckpt_path={crafted}", env=trained["env"], cwd=trained["tmp"], check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, name
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: checkpoint {crafted}"), name


def test_the_report_resolves_nothing_and_follows_no_link_inside_a_job(tmp_path: Path, monkeypatch) -> None:
    from test_report import LRN_CLAIM, fake_sweep

    from alexnet_lab.report import write_report

    monkeypatch.setenv("SECRET_TOKEN", "sk-SECRET123")
    jobs = [({"model.norm": n, "seed": s}, {"test/top1_err": 20.0 + s + (n == "none")}, 140)
            for n in ("rnorm", "none") for s in (1, 2)]  # fmt: skip
    sweep = fake_sweep(tmp_path / "s", {**LRN_CLAIM, "baseline": {"model.norm": "rnorm"}}, jobs)
    for hydra_file in sweep.glob("*/.hydra/hydra.yaml"):
        hydra_file.write_text("hydra:\n  runtime:\n    choices:\n      experiment: ${oc.env:SECRET_TOKEN}\n")
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params: ${oc.env:SECRET_TOKEN}\n  overrides:\n    task: []\n"
    )
    secret = tmp_path / "outside.json"
    secret.write_text(json.dumps({"status": "failed", "error": "SECRET_FROM_OUTSIDE"}))
    linked = next(sweep.glob("3_*")) / "metrics.json"
    linked.unlink()
    linked.symlink_to(secret)
    markdown = write_report(sweep)
    everything = markdown + (sweep / "report.json").read_text() + (sweep / "report.csv").read_text()
    assert "SECRET" not in everything
    assert "metrics.json is a link (it could lead anywhere); not read" in markdown
    assert "model.norm=rnorm (baseline)" in markdown  # the variants inferred from the jobs, not the planted params


def test_hostile_eval_records_in_a_job_cost_only_their_divisors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """<job>/eval/metrics.json is read for LRN divisors only: a link, a folder, deep nesting, absurd or NaN numbers,
    or the record of another checkpoint's weights show no divisors and leave the job's own results in the report."""
    from test_report import LRN_CLAIM, fake_sweep, sha256_text

    from alexnet_lab.report import build_report, to_markdown

    jobs = [({"model.norm": "rnorm", "seed": s}, {"test/top1_err": 20.0 + s}, 140) for s in range(1, 8)]
    jobs += [({"model.norm": "none", "seed": s}, {"test/top1_err": 20.5 + s}, 140) for s in range(1, 8)]
    sweep = fake_sweep(tmp_path / "s", {**LRN_CLAIM, "baseline": {"model.norm": "rnorm"}}, jobs)

    def record(digest: str, median: object, p99: object = 2.0) -> str:
        return json.dumps({"status": "finished", "ckpt_sha256": digest, "ckpt_bytes": 9,
                           "final": {"test/lrn/rnorm1/divisor_median": median, "test/lrn/rnorm1/divisor_p99": p99}})  # fmt: skip

    outside = tmp_path / "outside"
    outside.mkdir()
    planted = {
        1: None,  # eval/ a link to a folder with a valid record
        2: "[" * 100_000 + "]" * 100_000,  # deep nesting
        3: record(sha256_text("other weights"), 1.5),  # another checkpoint's weights
        4: record("DIGEST", 10**400),
        5: record("DIGEST", float("nan"), 1e308),
        6: record("DIGEST", 1.5).replace('"final": {', '"final": [{').replace("}}", "}]}"),  # final not a dict
    }
    for seed in range(1, 8):
        job = next(sweep.glob(f"*_model.norm-rnorm_seed-{seed}"))
        (job / "checkpoints").mkdir()
        (job / "checkpoints" / "last.ckpt").write_text(f"weights {seed}")
        digest = sha256_text(f"weights {seed}")
        if seed == 1:
            (outside / "metrics.json").write_text(record(digest, 9.0))
            (job / "eval").symlink_to(outside)
        elif seed == 7:
            (job / "eval" / "metrics.json").mkdir(parents=True)  # a folder where the record goes
        else:
            (job / "eval").mkdir()
            (job / "eval" / "metrics.json").write_text(planted[seed].replace("DIGEST", digest))
    report = build_report(sweep)
    assert [j.status for j in report.rows[0].jobs] == ["finished"] * 7
    assert all(j.divisors == {} for j in report.rows[0].jobs)
    markdown = to_markdown(report)
    assert "Does LRN act?" not in markdown and "unreadable" not in markdown
    first = next(sweep.glob("*_model.norm-rnorm_seed-1"))
    (first / "eval").unlink()
    shutil.copytree(outside, first / "eval")  # the same record, in place: read
    assert build_report(sweep).rows[0].jobs[0].divisors == {"rnorm1": (9.0, 2.0)}
    # a last.ckpt over the size the report hashes is not read at all (a sparse terabyte would take an hour)
    monkeypatch.setattr("alexnet_lab.report.sweep.MAX_HASHED", 8)
    monkeypatch.setattr("alexnet_lab.report.sweep.sha256", lambda path: pytest.fail(f"hashed {path}"))
    assert build_report(sweep).rows[0].jobs[0].divisors == {}
    monkeypatch.undo()
    # the same numbers in a job's own record make that job unreadable, not the report fail
    own = next(sweep.glob("*_model.norm-none_seed-1")) / "metrics.json"
    own.write_text(json.dumps({**json.loads(own.read_text()), "final": {"test/top1_err": 10**400}}))
    (row_none,) = [r for r in build_report(sweep).rows if r.label == "model.norm=none"]
    assert row_none.jobs[0].status == "unreadable"


def test_a_stored_speedup_claim_that_is_not_positive_is_dropped(tmp_path: Path) -> None:
    """A speedup is judged on a log scale: a sweep from elsewhere storing a speedup of 0 or below (or one whose band
    ends below 0) loses that claim instead of crashing the report."""
    from test_report import LRN_CLAIM, fake_sweep

    from alexnet_lab.report import build_report
    from alexnet_lab.report.analysis import parse_claims

    bad = [{"dataset": "cifar10", "metric": "speedup", "value": v, "tolerance": t, "source": "x"}
           for v, t in ((0.0, 1.0), (-3.0, 1.0), (-3.0, 0.0))]  # fmt: skip
    good = {"dataset": "cifar10", "metric": "speedup", "value": 0.5, "tolerance": 1.0, "source": "x"}
    assert [(c.value, c.tolerance) for c in parse_claims([*bad, good])] == [(0.5, 1.0)]
    jobs = [({"model": m, "seed": s}, {"test/top1_err": 20.0 + s + (m == "none")}, 140)
            for m in ("base", "none") for s in (1, 2)]  # fmt: skip
    report = build_report(fake_sweep(tmp_path, {**LRN_CLAIM, "claims": [*LRN_CLAIM["claims"], *bad]}, jobs))
    assert [c.claim.metric for c in report.checks] == ["top1"]


def test_crafted_text_is_escaped_in_the_report_and_the_scorecard(tmp_path: Path) -> None:
    from test_report import LRN_CLAIM, fake_sweep

    from alexnet_lab.report import write_report, write_scorecard

    html = "<img src=x onerror=alert(1)>"
    jobs = [({"model.norm": n, "seed": s}, {"test/top1_err": 20.0 + s + (n == "none")}, 140)
            for n in ("rnorm", "none") for s in (1, 2)]  # fmt: skip
    sweep = fake_sweep(tmp_path / "s", {**LRN_CLAIM, "baseline": {"model.norm": "rnorm"}}, jobs)
    for config_file in sweep.glob("*/.hydra/config.yaml"):
        config = OmegaConf.load(config_file)
        config.data._target_ = f"a.{html}DataModule"
        OmegaConf.save(config, config_file)
    markdown = write_report(sweep)
    assert "<img" not in markdown and "&lt;img" in markdown
    card = tmp_path / "card" / "r"
    card.mkdir(parents=True)
    (card / "report.md").write_text("x")
    (card / "report.json").write_text(json.dumps({"name": "x](javascript:alert(1))", "checks": [
        {"variant": "v", "claim": {"dataset": "cifar10", "metric": "top1", "value": 1.0, "tolerance": 1.0, "source": html},
         "measured": "m", "estimate": 0.5, "low": 0.1, "high": 0.9, "ratio": False, "n": 3, "verdict": "agrees"}]}))  # fmt: skip
    table = write_scorecard([tmp_path / "card"], tmp_path / "out")
    assert "<img" not in table and "&lt;img" in table
    assert not re.search(r"(?<!\\)\]\(javascript", table) and "x\\](javascript:alert(1))" in table  # no link


def test_an_archive_is_capped_in_total_and_a_batch_file_checked_before_it_is_converted(
    tmp_path: Path, monkeypatch
) -> None:
    from alexnet_lab.data import cifar10

    monkeypatch.setattr(cifar10, "MAX_ARCHIVE_BYTES", 1_000_000)  # the real cap: 256 MB, more than all of CIFAR-10
    archive = tmp_path / "many.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(3):  # 3 x 600 KB images: each under the member cap, together over the total
            member = tarfile.TarInfo(f"cifar/train/cat/{i}.png")
            member.size = 600_000
            tar.addfile(member, io.BytesIO(b"\0" * member.size))
    with pytest.raises(DataError, match=r"holds more than 0 MB of files, more than all of CIFAR-10"):
        CIFAR10DataModule(path=str(archive), cache_dir=str(tmp_path / "c1")).prepare_data()
    folder = write_batches(tmp_path / "bomb")
    inner = [0] * 1000
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": [[inner] * 1000] * 1000, b"labels": [0]}))
    assert (folder / "data_batch_1").stat().st_size < 20_000  # a few KB that would expand to 10^9 items
    with pytest.raises(DataError, match="its data is not a uint8 array of N x 3072 pixels"):
        CIFAR10DataModule(path=str(folder), cache_dir=str(tmp_path / "c2")).prepare_data()


def test_the_run_dir_guard_leaves_what_is_legitimate_alone(trained: dict, tmp_path: Path, monkeypatch) -> None:
    """Held lock, but this is rank 1 of the same SLURM job: it joins rank 0's run (no refusal). A sweep dir that is
    itself a link (kept on scratch) is accepted; a job dir inside it that is a link is not."""
    run = copy_run(trained, "ranked")
    resume = OmegaConf.create({"hydra": {"run": {"dir": str(run)}}, "ckpt_path": "last"})
    with runs.run_dir_lock(run):
        monkeypatch.setenv("SLURM_PROCID", "1")
        runs.RunDirGuard().on_run_start(resume)  # no SystemExit
        monkeypatch.setenv("SLURM_PROCID", "0")
        with pytest.raises(SystemExit):
            runs.RunDirGuard().on_run_start(resume)
    scratch = tmp_path / "scratch"
    (scratch / "0_seed-1").mkdir(parents=True)
    (tmp_path / "sweep").symlink_to(scratch)
    runs.RunDirGuard().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}}))
    (scratch / "1_seed-2").symlink_to(tmp_path)
    with pytest.raises(SystemExit):
        runs.RunDirGuard().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}}))


def test_a_checkpoint_with_a_numpy_rng_state_says_which_version_wrote_it(trained: dict) -> None:
    """Checkpoints before 2026-11-28 held NumPy's RNG state as an array; no NumPy global is allow-listed any more, and
    the refusal says why such a file is refused."""

    def as_array(ckpt: dict) -> None:
        name, keys, *rest = ckpt["rng_states"]["numpy"]
        ckpt["rng_states"]["numpy"] = (name, keys.numpy().astype("uint32"), *rest)

    crafted = crafted_checkpoint(trained, "numpy-rng", as_array)
    proc = run_cli("alexnet-eval", f"ckpt_path={crafted}", env=trained["env"], cwd=trained["tmp"], check=False)
    assert proc.returncode == 2 and "numpy" in proc.stderr.splitlines()[-1]
    assert proc.stderr.strip().endswith("(a checkpoint of alexnet-lab before 2026-11-28 holds its NumPy RNG state as "
                                        "an array: use that version for it)")  # fmt: skip
