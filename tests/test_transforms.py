"""Batched tensor augmentation and the device-resident loader: exact against per-image references."""

from __future__ import annotations

import torch

from alexnet_lab.data import Normalize, TensorBatches
from alexnet_lab.data.loader import derived_seed
from alexnet_lab.data.transforms import crop_offsets, flip_draws


def test_training_crops_and_flips_match_a_per_image_reference() -> None:
    """The loader's batched augmentation, image by image: zero-pad by 2, cut the drawn 8x8 window, mirror the drawn
    half; the draws come from (seed, epoch, batch) alone."""
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    loader = TensorBatches(x, torch.arange(64), 64, Normalize(), views="random", crop_padding=2, hflip=True, seed=3)
    ((got, ids),) = list(loader)
    gen = torch.Generator().manual_seed(derived_seed(3, 0, 0))  # seed 3, epoch 0, batch 0
    offsets, flips = crop_offsets(64, 4, gen), flip_draws(64, gen)
    assert offsets.min() == 0 and offsets.max() == 4  # all 2 * padding + 1 offsets occur in 128 draws
    assert 15 < int(flips.sum()) < 49
    for i in range(64):
        padded = torch.zeros(3, 12, 12, dtype=torch.uint8)
        padded[:, 2:10, 2:10] = x[i]
        top, left = offsets[i].tolist()
        want = padded[:, top : top + 8, left : left + 8]
        want = want.flip(-1) if flips[i] else want
        assert torch.equal((got[i] * 255).round().to(torch.uint8), want), i
    assert torch.equal(ids, torch.arange(64))


def test_normalize() -> None:
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize()(x).flatten(), torch.tensor([0.0, 0.2, 1.0]))
    out = Normalize([0.5, 0.5, 0.5], [0.25, 0.5, 1.0])(x).flatten()
    torch.testing.assert_close(out, torch.tensor([-2.0, -0.6, 0.5]))


def ids_loader(n: int, batch_size: int, **kwargs) -> TensorBatches:
    """Images whose every pixel is the sample index (n < 256), so batches reveal which samples they hold."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return TensorBatches(images, torch.arange(n), batch_size, Normalize(), **kwargs)


def seen(loader: TensorBatches) -> list[int]:
    return [i for _, y in loader for i in y.tolist()]


def test_every_sample_once_per_epoch_in_a_new_order() -> None:
    epoch = [0]
    loader = ids_loader(100, 16, shuffle=True, seed=5, epoch_fn=lambda: epoch[0])
    assert len(loader) == 7
    first = seen(loader)
    assert sorted(first) == list(range(100)) and first != list(range(100))
    assert seen(loader) == first  # same (seed, epoch): same order
    epoch[0] = 1
    second = seen(loader)
    assert sorted(second) == list(range(100)) and second != first
    for x, y in loader:  # the pixels travelled with their labels
        assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), y)


def test_drop_last_and_rank_shards() -> None:
    full = ids_loader(100, 16, shuffle=True, drop_last=True, seed=1)
    assert len(full) == 6 and len(seen(full)) == 96
    # evaluation: ranks split every sample between them, nothing twice
    shards = [seen(ids_loader(101, 20, rank=r, world_size=2)) for r in (0, 1)]
    assert (len(shards[0]), len(shards[1])) == (51, 50)
    assert sorted(shards[0] + shards[1]) == list(range(101))


def test_training_ranks_together_see_the_single_process_batches() -> None:
    images = torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8)
    kwargs = {"shuffle": True, "drop_last": True, "crop_padding": 2, "hflip": True, "views": "random", "seed": 4}
    single = list(TensorBatches(images, torch.arange(100), 20, Normalize(), **kwargs))
    ranks = [
        list(TensorBatches(images, torch.arange(100), 20, Normalize(), rank=r, world_size=2, **kwargs)) for r in (0, 1)
    ]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 5
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks):
        # global batch i = rank 0's batch i followed by rank 1's: same samples, same crops and flips
        assert torch.equal(y, torch.cat([y0, y1])) and torch.equal(x, torch.cat([x0, x1]))


def test_resume_skips_the_trained_batches() -> None:
    images = torch.randint(0, 256, (60, 3, 8, 8), dtype=torch.uint8)
    kwargs = {
        "shuffle": True,
        "crop_padding": 2,
        "hflip": True,
        "views": "random",
        "drop_last": True,
        "seed": 2,
        "epoch_fn": lambda: 3,
    }
    whole = list(TensorBatches(images, torch.arange(60), 10, Normalize(), **kwargs))
    resumed = TensorBatches(images, torch.arange(60), 10, Normalize(), trained_fn=lambda: 4, **kwargs)
    resumed.load_state_dict({"epoch": 3, "batches_trained": 4})
    rest = list(resumed)
    assert len(rest) == 2
    for (x1, y1), (x2, y2) in zip(whole[4:], rest, strict=True):
        assert torch.equal(y1, y2) and torch.equal(x1, x2)  # same samples and the same augmentation draws
    assert len(list(resumed)) == 6  # the next pass is a whole epoch again


def test_augmented_batches_are_reproducible_for_a_seed() -> None:
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    kwargs = {"shuffle": True, "crop_padding": 2, "hflip": True, "views": "random"}
    a = [x for x, _ in TensorBatches(images, torch.arange(40), 8, Normalize(), seed=3, **kwargs)]
    b = [x for x, _ in TensorBatches(images, torch.arange(40), 8, Normalize(), seed=3, **kwargs)]
    c = [x for x, _ in TensorBatches(images, torch.arange(40), 8, Normalize(), seed=4, **kwargs)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


def test_each_batch_pairs_the_images_with_their_own_labels() -> None:
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    batches = list(TensorBatches(images, torch.arange(50), 8, Normalize(), shuffle=True, seed=9))
    served = torch.cat([y for _, y in batches])
    assert sorted(served.tolist()) == list(range(50)) and served.tolist() != list(range(50))  # all of them, shuffled
    for x, y in batches:  # labels are the sample ids: each image travels with its own
        torch.testing.assert_close(x, images[y].float() / 255)


def test_crops_smaller_than_the_image_and_their_evaluation_views() -> None:
    """cuda-convnet's 24x24 crops of 32x32 images: random windows in training, the centre or ten views in
    evaluation, with the mean image's centre subtracted from every crop (as its cropping data provider did)."""
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    mean = torch.rand(3, 32, 32)
    norm = Normalize(mean, 1 / 255)
    train = TensorBatches(images, torch.arange(16), 16, norm, views="random", crop_size=24, seed=1)
    ((x, _),) = list(train)
    gen = torch.Generator().manual_seed(derived_seed(1, 0, 0))
    offsets = crop_offsets(16, 8, gen)
    assert offsets.max() > 0
    centre_mean = mean[:, 4:28, 4:28] * 255
    for i in range(16):
        top, left = offsets[i].tolist()
        window = images[i, :, top : top + 24, left : left + 24].float()
        torch.testing.assert_close(x[i], window - centre_mean, atol=1e-3, rtol=0)
    still = TensorBatches(images, torch.arange(16), 16, norm, views="random", crop_size=24, random_crop=False)
    torch.testing.assert_close(next(iter(still))[0], images[:, :, 4:28, 4:28].float() - centre_mean, atol=1e-3, rtol=0)
    ten = next(iter(TensorBatches(images, torch.arange(16), 16, norm, views="ten_crop", crop_size=24))).inputs.images
    assert ten.shape == (16, 10, 3, 24, 24)
    torch.testing.assert_close(ten[:, 0], images[:, :, :24, :24].float() - centre_mean, atol=1e-3, rtol=0)
    # mirrored views less the (unmirrored) mean centre, as cuda-convnet subtracted it after flipping
    torch.testing.assert_close(ten[:, 9], images[:, :, 4:28, 4:28].flip(-1).float() - centre_mean, atol=1e-3, rtol=0)
    centre = next(iter(TensorBatches(images, torch.arange(16), 16, norm, views="center", crop_size=24)))[0]
    torch.testing.assert_close(centre, ten[:, 4])
