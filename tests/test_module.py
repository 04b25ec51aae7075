"""The LightningModule's switches that change how the network runs: channels_last and torch.compile."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from alexnet_lab.module import Classifier


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)
    )


def batches(n: int = 3) -> DataLoader:
    gen = torch.Generator().manual_seed(1)
    images, labels = torch.randn(6 * n, 3, 12, 12, generator=gen), torch.randint(0, 5, (6 * n,), generator=gen)
    return DataLoader(TensorDataset(images, labels), batch_size=6)


def fit(module: Classifier, data: DataLoader, ckpt_path: Path | None = None) -> Classifier:
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=data, ckpt_path=ckpt_path)
    return module


def module_with(net: nn.Module, **kwargs) -> Classifier:
    return Classifier(net, partial(torch.optim.SGD, lr=0.1, momentum=0.9), num_classes=5, **kwargs)


@pytest.mark.parametrize("setting", [True, "auto"])
def test_channels_last_trains_in_nhwc_to_the_same_weights(setting: bool | str) -> None:
    net = tiny_net()
    nchw = fit(module_with(copy.deepcopy(net), channels_last=False), batches())
    nhwc = fit(module_with(copy.deepcopy(net), channels_last=setting), batches())
    assert nhwc.nhwc and not nchw.nhwc  # "auto" picks NHWC on a CPU
    assert nhwc.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not nchw.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    for (name, a), b in zip(nhwc.net.state_dict().items(), nchw.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)  # one layout or the other: same training


def test_channels_last_auto_stays_nchw_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    module = module_with(tiny_net(), channels_last="auto")
    gpu = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    monkeypatch.setattr(Classifier, "trainer", property(lambda self: gpu))
    module.setup("fit")
    assert not module.nhwc and not module.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="channels_last='yes': use true, false or auto"):
        module_with(tiny_net(), channels_last="yes")


def test_compile_trains_like_eager_and_keeps_checkpoint_names() -> None:
    """compile names a torch.compile backend here (aot_eager: dynamo and AOT autograd, no C++ toolchain, seconds
    instead of inductor's half minute on this CPU); true takes torch's default the same way."""
    net = tiny_net()
    eager = fit(module_with(copy.deepcopy(net)), batches())
    compiled = fit(module_with(copy.deepcopy(net), compile="aot_eager"), batches())
    assert compiled.net._compiled_call_impl is not None  # it really ran through torch.compile
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod: checkpoints load either way
    for (name, a), b in zip(compiled.net.state_dict().items(), eager.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    reloaded = module_with(tiny_net())
    reloaded.load_state_dict(compiled.state_dict())
    x = next(iter(batches(1)))[0]
    torch.testing.assert_close(reloaded(x), eager(x), atol=1e-5, rtol=1e-4)


def test_a_compiled_net_still_shows_what_its_lrn_divides_by() -> None:
    """Hooks added after torch.compile traced a net never fire: the divisor monitor validates eagerly instead."""
    from alexnet_lab.callbacks import ResponseNormMonitor
    from alexnet_lab.models.layers import LRN

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), LRN(size=3, alpha=1.0, beta=0.75, k=1.0), nn.Flatten(),
                        nn.Linear(8 * 10 * 10, 5))  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=1, callbacks=[ResponseNormMonitor()],  # as alexnet-train
    )  # fmt: skip
    module = module_with(net, compile="aot_eager")
    trainer.fit(module, train_dataloaders=batches(), val_dataloaders=batches(2))
    assert module.net._compiled_call_impl is not None  # trained through torch.compile
    median = float(trainer.callback_metrics["lrn/norm1/divisor_median"])
    assert median > 1.0  # k^beta = 1: the sums of squares over the window count
    assert torch.compiler.is_compiling() is False
    # the compiled net is back in use after validation: a hook added now does not fire
    fired: list[int] = []
    module.net[2].register_forward_hook(lambda m, i, o: fired.append(1))
    module.net(next(iter(batches(1)))[0])
    assert fired == []


def test_a_test_pass_measures_the_divisors_of_the_weights_it_tests() -> None:
    """alexnet-eval's measure of whether LRN acts: test/lrn/<layer>/* over every test image, the weights as tested."""
    from alexnet_lab.callbacks import ResponseNormMonitor
    from alexnet_lab.models.layers import LRN

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), LRN(size=3, alpha=1.0, beta=0.75, k=1.0), nn.Flatten(),
                        nn.Linear(8 * 10 * 10, 5))  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[ResponseNormMonitor()])
    trainer.test(module_with(net), batches(2), verbose=False)
    with torch.no_grad():
        divisors = torch.cat([net[2].divisor(net[1](net[0](x))).flatten() for x, _ in batches(2)])
    want = torch.quantile(divisors, torch.tensor([0.5, 0.99])).tolist()
    got = [float(trainer.callback_metrics[f"test/lrn/norm1/divisor_{q}"]) for q in ("median", "p99")]
    assert got == pytest.approx(want, rel=1e-6) and want[0] > 1.0  # all 9,600 divisors; k^beta = 1
    assert not any(k.startswith("lrn/") for k in trainer.callback_metrics)  # validation's names stay validation's


def test_an_epoch_resumed_mid_way_is_timed_from_the_resume(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Lightning starts no epoch when it resumes inside one (no on_train_epoch_start): its line still gets a time."""
    mid = ModelCheckpoint(tmp_path, filename="mid", every_n_train_steps=2, save_top_k=-1)  # after 2 of 3 batches
    L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, callbacks=[mid], enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    ).fit(module_with(tiny_net()), train_dataloaders=batches())  # fmt: skip
    caplog.set_level("INFO", logger="alexnet_lab.module")
    fit(module_with(tiny_net()), batches(), ckpt_path=tmp_path / "mid.ckpt")
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/1:")]
    assert not line.endswith("-0.0 s") and float(line.rsplit(", ", 1)[1].removesuffix(" s")) >= 0, line


def test_the_divisor_sample_sees_every_column_of_a_feature_map() -> None:
    """Half the divisors sampled (a stride of 2 would see only the even columns, where this input is 0)."""
    from alexnet_lab.callbacks import ResponseNormMonitor
    from alexnet_lab.models.layers import LRN

    images = torch.zeros(6, 3, 12, 12)
    images[..., 1::2] = 10.0  # even columns: divisor 1; odd: (1 + 300) ** 0.75 in the middle channel (1/6 of all)
    net = nn.Sequential(LRN(size=3, alpha=1.0, beta=0.75, k=1.0), nn.Flatten(), nn.Linear(3 * 12 * 12, 5))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        callbacks=[ResponseNormMonitor(max_values=images.numel() // 2)])  # fmt: skip
    trainer.test(
        module_with(net), DataLoader(TensorDataset(images, torch.zeros(6, dtype=torch.long)), 6), verbose=False
    )
    assert float(trainer.callback_metrics["test/lrn/norm1/divisor_p99"]) == pytest.approx(301.0**0.75)
