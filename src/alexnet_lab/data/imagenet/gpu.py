"""Batched JPEG decoding on the GPU (nvjpeg) into the same uint8 squares, or random-resized crops, the CPU
workers make; what nvjpeg cannot read goes to PIL."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import pil_to_tensor, resize, resized_crop

from alexnet_lab.data.common import DataError
from alexnet_lab.data.imagenet.decode import load_rgb
from alexnet_lab.data.transforms import center_crop

Decoder = Callable[..., torch.Tensor | list[torch.Tensor]]  # torchvision's decode_jpeg, or a stand-in in tests


def decode_files(
    files: list[torch.Tensor],
    paths: list[str],
    device: torch.device,
    skip_bad: bool,
    decoder: Decoder = decode_jpeg,
) -> list[torch.Tensor | None]:
    """Each file decoded to uint8 RGB (3, H, W) on ``device``: the whole batch at once, or, when a file fails it,
    file by file, with PIL (on the CPU, then moved) for what nvjpeg rejects (PNG, CMYK). A file neither can read
    raises :class:`DataError`, or with ``skip_bad`` is None."""
    if device.type == "cuda":
        # nvJPEG may write into blocks the caching allocator just recycled while queued kernels still read
        # them (pytorch/vision#9606: NaN losses on H100/H200): let the queued work finish first
        torch.cuda.current_stream(device).synchronize()
    try:
        return list(decoder(files, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad file fails the batch: retry one by one
        pass
    decoded: list[torch.Tensor | None] = []
    for data, path in zip(files, paths, strict=True):
        try:
            decoded.append(decoder(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            try:
                decoded.append(pil_to_tensor(load_rgb(path)).to(device))
            except DataError:
                if not skip_bad:
                    raise
                decoded.append(None)
    return decoded


def to_training_size(image: torch.Tensor, size: int, box: list[int] | None, crop_size: int) -> torch.Tensor:
    """A decoded image as a worker would have made it: the random-resized ``box`` at ``crop_size`` when given, else
    the centre square after rescaling to shorter side ``size``."""
    if box is not None:
        return resized_crop(image, *box, [crop_size] * 2, antialias=True)
    if min(image.shape[-2:]) != size:
        image = resize(image, [size], antialias=True)
    return center_crop(image, size)
