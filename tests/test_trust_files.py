"""Trust II: every file read from elsewhere is data. Each attack builds its crafted file or dir here and checks that
nothing of it runs, nothing is written through it, and the user gets one line naming it."""

from __future__ import annotations

import gzip
import json
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

from alexnet_lab import cli
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
    assert cli.previous_attempt(OmegaConf.create({"seed": 1}), job) == (None, None)


@pytest.mark.parametrize("content", ["[1, 2, 3]", "{half a record", "\x00\xff"])
def test_an_unreadable_record_is_set_aside_and_the_job_runs_again(tmp_path: Path, content: str) -> None:
    job = tmp_path / "0_seed-1"
    (job / "checkpoints").mkdir(parents=True)
    (job / "metrics.json").write_text(content)
    assert cli.previous_attempt(OmegaConf.create({"seed": None}), job) == (None, None)
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
    with cli.run_dir_lock(busy):
        with pytest.raises(cli.JobBusy, match=f"{busy} is being run by another process"), cli.run_dir_lock(busy):
            pass
        run_cli("alexnet-train", "-m", *FAST, "trainer.max_epochs=1", "seed=1,2", f"hydra.sweep.dir={sweep}",
                env=trained["env"], cwd=trained["tmp"])  # fmt: skip
    assert json.loads((busy / "metrics.json").read_text()) == running
    assert not (busy / "checkpoints").exists()
    assert json.loads((sweep / "1_seed-2" / "metrics.json").read_text())["status"] == "finished"


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
    assert cli.earlier_seconds(tmp_path) == 3144.6
    for record in ({"status": "finished", "seconds": 10.0}, {"status": "interrupted", "seconds": -1}, [1]):
        (tmp_path / "metrics.json").write_text(json.dumps(record))
        assert cli.earlier_seconds(tmp_path) == 0.0
    (tmp_path / "metrics.json").write_text("{broken")
    assert cli.earlier_seconds(tmp_path) == 0.0
