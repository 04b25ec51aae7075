"""One image file into RGB pixels, whatever ImageNet holds (grayscale, CMYK, PNG named .JPEG)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from alexnet_lab.data.common import UNREADABLE, DataError, bomb_guarded
from alexnet_lab.files import atomic_write


def unreadable(path: str, err: Exception) -> DataError:
    return DataError(f"cannot decode image {path} ({err}); delete or replace it, or set data.skip_bad_images=true")


def load_rgb(path: str, shorter_side: int | None = None) -> Image.Image:
    """An image file as RGB (grayscale, CMYK, palette and PNG-in-.JPEG included), optionally rescaled so its
    shorter side is ``shorter_side``. A truncated or unreadable file raises :class:`DataError` naming it."""
    try:
        with bomb_guarded(), Image.open(path) as img:
            if shorter_side is not None:
                scale = shorter_side / min(img.size)
                # JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves enough pixels
                img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            rgb = img.convert("RGB")
    except UNREADABLE as err:
        raise unreadable(path, err) from err
    if shorter_side is not None and min(rgb.size) != shorter_side:
        scale = shorter_side / min(rgb.size)
        size = (max(shorter_side, round(rgb.width * scale)), max(shorter_side, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)  # antialiased, as torchvision's Resize on PIL images
    return rgb


def resize_file(job: tuple[str, str, int]) -> tuple[str, str] | None:
    """Write ``src`` rescaled to shorter side ``size`` as a JPEG at ``dst``; None, or (src, why it failed)."""
    src, dst, size = job
    try:
        img = load_rgb(src, size)
    except DataError as err:
        return src, str(err)
    atomic_write(Path(dst), lambda f: img.save(f, format="JPEG", quality=90), sync=False)
    return None
