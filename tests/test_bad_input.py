"""Bad input ends with one clear line, a non-zero exit and no run dir left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST, run_cli, write_batches


def leftovers(logs: Path) -> list[Path]:
    return [p for p in logs.rglob("*") if p.is_file()] if logs.exists() else []


@pytest.mark.parametrize(
    "override, code, message",
    [
        ("model=vgg", 1, "Could not find 'model/vgg'"),
        ("data=imagenette", 1, "Could not find 'data/imagenette'"),
        ("trainer.max_epoch=3", 1, "Key 'max_epoch' is not in struct"),
        (
            "trainer.max_epochs=abc",
            2,
            "error: trainer.max_epochs='abc' is not an integer; give e.g. trainer.max_epochs=30",
        ),
        ("data.batch_size=1.5", 2, "error: data.batch_size=1.5 is not an integer; give e.g. data.batch_size=128"),
        ("optimizer.lr=fast", 2, "error: optimizer.lr='fast' is not a number; give e.g. optimizer.lr=0.01"),
        ("data.hflip=maybe", 2, "error: data.hflip='maybe' is not a boolean; use data.hflip=true or data.hflip=false"),
        ("seed=x", 2, "error: seed='x' is not an integer; give e.g. seed=0, or leave it out"),
    ],
)
def test_bad_overrides(override: str, code: int, message: str, cli_env: dict, tmp_path: Path) -> None:
    write_batches(tmp_path / "data" / "cifar10", n_train=100, n_test=20)
    proc = run_cli("alexnet-train", *FAST, override, env=cli_env, cwd=tmp_path, check=False)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert message in proc.stderr
    if code == 2:  # our own checks: exactly one line
        assert proc.stderr.strip().splitlines() == [message]
    assert leftovers(tmp_path / "logs") == []


def test_missing_data_is_one_line_and_leaves_nothing(cli_env: dict, tmp_path: Path) -> None:
    proc = run_cli("alexnet-train", *FAST, env=cli_env, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no CIFAR-10 data at {tmp_path}/data/cifar10")
    assert last.endswith("set data.path (or ALEXNET_CIFAR10) to one, or data.download=true")
    assert "Traceback" not in proc.stderr
    assert leftovers(tmp_path / "logs") == []


def test_corrupt_archive_is_one_line(cli_env: dict, tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 truncated")
    proc = run_cli("alexnet-train", *FAST, f"data.path={archive}", env=cli_env, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: corrupt or truncated archive {archive}")
    assert leftovers(tmp_path / "logs") == [] and not list((tmp_path / "data").rglob("*.pt"))
