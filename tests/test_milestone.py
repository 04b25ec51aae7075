"""The training-error milestone (the paper's Figure 1): a running window over the last images, read per batch, the
crossing interpolated inside its batch; checked on hand-made batches and in a real run that resumes mid-race."""

from __future__ import annotations

import pytest
import torch

from alexnet_lab.callbacks import MilestoneStop


class FakeTrainer:
    """What MilestoneStop reads of Lightning's trainer."""

    def __init__(self, batches_per_epoch: int) -> None:
        self.num_training_batches, self.current_epoch, self.world_size = batches_per_epoch, 0, 1
        self.should_stop = False
        self.strategy = self

    def reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        return tensor


class FakeModule:
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log(self, name: str, value: float, **kwargs: object) -> None:
        self.logged[name] = value


def race(
    mistakes: list[int], images: int, batches_per_epoch: int, **kwargs: object
) -> tuple[MilestoneStop, FakeModule, FakeTrainer, int]:
    """Feed batches of ``images`` with the given mistakes; the index of the batch at which the callback stopped."""
    stop, module, trainer = MilestoneStop(**kwargs), FakeModule(), FakeTrainer(batches_per_epoch)
    stop.on_train_start(trainer, module)
    for i, wrong in enumerate(mistakes):
        trainer.current_epoch, batch_idx = divmod(i, batches_per_epoch)
        out = {"wrong": torch.tensor(wrong), "images": images}
        stop.on_train_batch_end(trainer, module, out, None, batch_idx)
        if trainer.should_stop:
            return stop, module, trainer, i
    return stop, module, trainer, -1


def test_the_crossing_is_interpolated_inside_the_batch_where_the_running_error_drops() -> None:
    # batches of 100 images, a window of 400, 10 batches an epoch; errors per batch (%): 50 x 6, then 10 x 10
    mistakes = [50] * 6 + [10] * 10
    stop, module, _, stopped = race(mistakes, 100, 10, below=25.0, window_images=400)
    # running error after batch i (1-based): 50 for i = 4..6, then 40, 30, 20: it crosses 25 during batch 9,
    # halfway from 30 to 20, i.e. at 8.5 batches = 0.85 epochs
    assert module.logged["milestone/epochs"] == pytest.approx(0.85)
    assert module.logged["milestone/resolution"] == pytest.approx(0.1)
    # mistakes are read once per window (400 images) and at an epoch's end: the check after batch 10 finds the
    # crossing and stops
    assert stopped == 9 and stop.reached


def test_the_oldest_batch_counts_with_its_share_of_the_window() -> None:
    # batches of 300 images against a window of 1,000: the oldest batch counts 100 of its 300 images
    mistakes = [150, 30, 30, 30, 30, 30, 30, 30]  # 50 %, then 10 % per batch
    stop, module, _, _ = race(mistakes, 300, 100, below=13.0, window_images=1000)
    # after batch 4: (150 * 100/300 + 90) / 1000 = 14.0 %; after batch 5: (30 * 100/300 + 90) / 1000 = 10.0 %
    assert module.logged["milestone/epochs"] == pytest.approx((4 + 0.25) / 100)  # 14 -> 10 crosses 13 at 1/4
    assert stop.previous[0] == pytest.approx(10.0)


def test_a_run_that_never_gets_there_logs_nothing_and_runs_on() -> None:
    stop, module, _, stopped = race([40] * 30, 100, 10, below=25.0, window_images=400)
    assert stopped == -1 and not module.logged and not stop.reached


def test_the_window_survives_a_resume() -> None:
    """The state a checkpoint carries: a run resumed after batch 7 crosses where the uninterrupted one did."""
    mistakes = [50] * 6 + [10] * 10
    first, _, _, _ = race(mistakes[:7], 100, 10, below=25.0, window_images=300)
    state = first.state_dict()
    resumed, module, trainer = MilestoneStop(below=25.0, window_images=300), FakeModule(), FakeTrainer(10)
    resumed.load_state_dict(state)
    resumed.on_train_start(trainer, module)
    for i in range(7, 16):
        trainer.current_epoch, batch_idx = divmod(i, 10)
        resumed.on_train_batch_end(
            trainer, module, {"wrong": torch.tensor(mistakes[i]), "images": 100}, None, batch_idx
        )
        if trainer.should_stop:
            break
    _, whole, _, _ = race(mistakes, 100, 10, below=25.0, window_images=300)
    assert module.logged["milestone/epochs"] == pytest.approx(whole.logged["milestone/epochs"])


def test_a_run_resumed_after_its_crossing_says_it_again_and_stops() -> None:
    """Killed after the crossing (while testing, say) and resumed from a checkpoint taken after it: the crossing comes
    back from the checkpoint and the run stops, instead of training on to its cap as if it never got there."""
    mistakes = [50] * 6 + [10] * 10
    first, logged, _, stopped = race(mistakes, 100, 10, below=25.0, window_images=400)
    assert stopped == 9
    resumed, module, trainer = MilestoneStop(below=25.0, window_images=400), FakeModule(), FakeTrainer(10)
    resumed.load_state_dict(first.state_dict())
    resumed.on_train_start(trainer, module)
    resumed.on_train_batch_end(trainer, module, {"wrong": torch.tensor(10), "images": 100}, None, 0)
    assert trainer.should_stop and module.logged == logged.logged


def test_a_crossing_in_the_first_window_is_only_an_upper_bound() -> None:
    _, module, _, _ = race([10] * 8, 100, 4, below=25.0, window_images=400)
    # below 25 % from the first full window on: it got there at 1.0 epochs or before, anywhere in that first epoch
    assert module.logged["milestone/epochs"] == pytest.approx(1.0)
    assert module.logged["milestone/resolution"] == pytest.approx(1.0)
