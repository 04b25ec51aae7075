"""alexnet-predict (the paper's Figure 4): top-5 against the module's own softmax, neighbours against brute force,
the figures' panels, every network's checkpoint, and bad input in one line; alexnet-eval's record of the bytes it
tested, in process on the same checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import FAST, hydra_task, isolated_env, run_cli, write_batches, write_jpeg_tree
from PIL import Image

from alexnet_lab import errors
from alexnet_lab.models import CudaConvnet18pct
from alexnet_lab.neighbours import distances, nearest, penultimate
from alexnet_lab.predict import predict
from alexnet_lab.train import train

WNIDS = ["n01440764", "n01443537", "n01484850"]


def test_nearest_over_key_batches_equals_the_dense_search() -> None:
    torch.manual_seed(0)
    queries, keys = torch.randn(5, 64), torch.randn(103, 64)
    for metric in ("euclidean", "cosine"):
        found = nearest(queries, keys.split(10), k=4, metric=metric)
        dense = distances(queries, keys, metric).topk(4, dim=1, largest=False)
        torch.testing.assert_close(found.distances, dense.values)
        assert torch.equal(found.indices, dense.indices)
    torch.testing.assert_close(distances(queries, keys), torch.cdist(queries.double(), keys.double()).float())


def test_streamed_nearest_equals_brute_force_and_finds_itself() -> None:
    """Training images queried against the training set find themselves first, at distance 0; the running top-k
    over batches is the top-k over everything."""
    torch.manual_seed(0)
    net = CudaConvnet18pct().eval()
    images = torch.randn(70, 3, 32, 32) * 50
    batches = [(images[i : i + 16], torch.zeros(16)) for i in range(0, 70, 16)]
    features = torch.cat(list(penultimate(net, batches)))
    assert features.shape == (70, 1024)  # the input of fc10: the last hidden layer
    queries = features[[3, 41, 69]]
    found = nearest(queries, (features[i : i + 16] for i in range(0, 70, 16)), k=4)
    assert found.indices[:, 0].tolist() == [3, 41, 69] and found.distances[:, 0].abs().max() < 1e-3
    brute = distances(queries, features).topk(4, largest=False)
    assert torch.equal(found.indices, brute.indices)
    with pytest.raises(ValueError, match="asked for 4 neighbours among 3 images"):
        nearest(queries, [features[:3]], k=4)


def train_in_process(tmp: Path, name: str, *overrides: str) -> Path:
    run_dir = tmp / "runs" / name
    with hydra_task("train", [*overrides, "~callbacks.rich_progress_bar", "trainer.enable_model_summary=false"],
                    run_dir) as cfg:  # fmt: skip
        train(cfg, run_dir)
    return run_dir / "checkpoints" / "last.ckpt"


def predict_in_process(tmp: Path, name: str, ckpt: Path, *overrides: str) -> Path:
    run_dir = tmp / "predict" / name
    with hydra_task("predict", [f"ckpt_path={ckpt}", "device=cpu", *overrides], run_dir) as cfg:
        predict(cfg, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("predict")
    write_batches(tmp / "cifar", n_train=300, n_test=60)
    fast = [a for a in FAST if not a.startswith(("model=", "~callbacks", "trainer.enable"))]
    ckpt = train_in_process(tmp, "18pct", "model=cudaconvnet_18pct", *fast, f"data.path={tmp / 'cifar'}",
                            f"data.cache_dir={tmp / 'cache'}", "trainer.max_epochs=1", "seed=0")  # fmt: skip
    return {"tmp": tmp, "ckpt": ckpt, "fast": fast}


def test_eval_records_the_bytes_it_tested_and_refuses_a_checkpoint_that_changed(
    lab: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record's ckpt_sha256 is the digest of the file as tested; a checkpoint rewritten during the test (its run
    still training) gives one line and no record, since the figures may be of other weights than the digest names."""
    import hashlib
    import shutil

    import lightning as L

    from alexnet_lab.eval import evaluate

    ckpt = tmp_path / "last.ckpt"
    shutil.copyfile(lab["ckpt"], ckpt)
    overrides = [f"ckpt_path={ckpt}", "trainer.accelerator=cpu", "~callbacks"]
    with hydra_task("eval", overrides, tmp_path / "eval") as cfg:
        record = evaluate(cfg, tmp_path / "eval")
    assert record["ckpt_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert record["ckpt_bytes"] == ckpt.stat().st_size > 0
    test = L.Trainer.test

    def test_while_a_run_saves(self: L.Trainer, *args: object, **kwargs: object) -> object:
        result = test(self, *args, **kwargs)
        ckpt.write_bytes(ckpt.read_bytes() + b"another epoch")
        return result

    monkeypatch.setattr(L.Trainer, "test", test_while_a_run_saves)
    with hydra_task("eval", overrides, tmp_path / "again") as cfg, pytest.raises(errors.ConfigError) as err:
        evaluate(cfg, tmp_path / "again")
    assert str(err.value) == (f"checkpoint {ckpt} changed while it was tested (is its run still training?); evaluate "
                              "it again once nothing writes it")  # fmt: skip
    assert not (tmp_path / "again" / "metrics.json").exists()

    def unreadable(path: Path) -> str:  # what a checkpoint without read permission raises (tests run as root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("alexnet_lab.eval.sha256", unreadable)
    with hydra_task("eval", overrides, tmp_path / "denied") as cfg, pytest.raises(errors.ConfigError) as err:
        evaluate(cfg, tmp_path / "denied")
    assert str(err.value) == f"checkpoint {ckpt} is unreadable (Permission denied); pick another file"


def test_figure_4_for_a_cifar_checkpoint(lab: dict) -> None:
    out = predict_in_process(lab["tmp"], "figure4", lab["ckpt"], "predict.images=8", "predict.queries=3",
                             "predict.neighbours=4")  # fmt: skip
    with Image.open(out / "predictions.png") as png:
        assert png.size == (4 * 240, 2 * 360)  # 8 panels: 2 rows of 4, each 2.4 x 3.6 inches at 100 dpi
    with Image.open(out / "neighbours.png") as png:
        assert png.size == ((1 + 4) * 130, 3 * 140)  # 3 queries, each followed by 4 neighbours
    assert (out / "confusion.png").exists()
    record = json.loads((out / "metrics.json").read_text())
    assert len(record["shown"]) == 8 and len(record["queries"]) == 3
    assert [len(row) for row in record["neighbours"]] == [4, 4, 4] and record["train_images_searched"] == 200
    assert all(d == sorted(d) for d in record["distances"])  # nearest first
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and list(rows[0]) == [
        "index",
        "true",
        *[c for i in range(1, 6) for c in (f"top{i}", f"p{i}")],
    ]

    # the CSV's top-5 are the module's own softmax on those images
    from alexnet_lab.data import CIFAR10DataModule
    from alexnet_lab.models import CudaConvnet18pct

    ckpt = torch.load(lab["ckpt"], map_location="cpu", weights_only=True)
    net = CudaConvnet18pct()
    net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    config = ckpt["hyper_parameters"]["run_config"]["data"]
    dm = CIFAR10DataModule(**{k: v for k, v in config.items() if k != "_target_"})
    dm.prepare_data()
    dm.setup("test")
    x, y = next(dm.unaugmented_batches("test", torch.device("cpu")))
    probs = net.eval()(x).softmax(-1).detach()
    for i in (0, 7, 49):  # the first batch of 50
        top = probs[i].topk(5)
        assert [rows[i][f"top{j + 1}"] for j in range(5)] == [dm.classes[c] for c in top.indices.tolist()]
        assert [float(rows[i][f"p{j + 1}"]) for j in range(5)] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert rows[i]["true"] == dm.classes[y[i]]
    # TensorBoard has the same pictures
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))
    events.Reload()
    assert set(events.Tags()["images"]) == {"predict/predictions", "predict/neighbours", "predict/confusion"}


def test_cosine_distance_and_a_training_subset(lab: dict) -> None:
    out = predict_in_process(lab["tmp"], "cosine", lab["ckpt"], "predict.distance=cosine", "predict.max_train=50",
                             "predict.indices=[0,5,9]", "predict.queries=2", "predict.neighbours=2")  # fmt: skip
    record = json.loads((out / "metrics.json").read_text())
    assert record["shown"] == [0, 5, 9] and record["queries"] == [0, 5] and record["train_images_searched"] == 50
    assert all(0.0 <= d <= 2.0 for row in record["distances"] for d in row)


@pytest.mark.parametrize(
    "model, data",
    [
        ("alexnet_cifar", []),
        ("alexnet_cifar_2gpu", []),
        ("cudaconvnet_11pct", ["data.crop_size=24", "data.crop_padding=0"]),
        ("alexnet", ["imagenet"]),
        ("alexnet_torchvision", ["imagenet"]),
    ],
)
def test_a_checkpoint_of_each_network_works(lab: dict, model: str, data: list[str]) -> None:
    tmp = lab["tmp"]
    if data == ["imagenet"]:
        tree = tmp / "imagenet"
        if not tree.exists():
            write_jpeg_tree(tree, WNIDS, train=4, val=2)
        data = ["data=imagenet", f"data.path={tree}", f"data.cache_dir={tmp / 'imagenet-cache'}", "data.classes=3",
                "data.minival_per_class=1", "data.batch_size=3", "data.eval_batch_size=3", "data.num_workers=0",
                "data.mean_images=12", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]  # fmt: skip
    else:
        data = [*lab["fast"], f"data.path={tmp / 'cifar'}", f"data.cache_dir={tmp / 'cache'}", *data]
    ckpt = train_in_process(tmp, model, f"model={model}", *data, "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                            "trainer.accelerator=cpu", "test=false", "seed=0")  # fmt: skip
    out = predict_in_process(tmp, model, ckpt, "predict.images=2", "predict.queries=1", "predict.neighbours=2")
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "finished" and len(record["neighbours"][0]) == 2
    assert (out / "predictions.png").exists() and (out / "neighbours.png").exists()


def test_bad_input_is_one_line(lab: dict, tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"predict.indices holds 999, outside the test split's 0..59"):
        predict_in_process(lab["tmp"], "bad", lab["ckpt"], "predict.indices=[1,999]")
    env = isolated_env(tmp_path)
    missing = tmp_path / "nope.ckpt"
    proc = run_cli("alexnet-predict", f"ckpt_path={missing}", env=env, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: checkpoint {missing} does not exist; pass ckpt_path=<run dir>/checkpoints/<file>.ckpt"
    ]
    assert not (tmp_path / "logs" / "predict" / "runs").exists() or not any(
        (tmp_path / "logs" / "predict" / "runs").iterdir()
    )


@pytest.mark.slow
def test_notebook_shows_both_figures(lab: dict, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    import os

    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "figure4.ipynb", as_version=4)
    os.environ.update(CKPT=str(lab["ckpt"]), PREDICT_DIR=str(tmp_path / "out"))
    try:
        nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    finally:
        del os.environ["CKPT"], os.environ["PREDICT_DIR"]
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
    assert (tmp_path / "out" / "predictions.csv").exists()
