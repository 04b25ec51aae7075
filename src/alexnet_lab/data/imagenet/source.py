"""Finding ImageNet: class folders, the official archives (unpacked with torchvision's parsers) and the devkit's
class names. The data root is only ever read."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path

from alexnet_lab.data.common import IMAGE_SUFFIXES, DataError

log = logging.getLogger(__name__)

ARCHIVES = {
    "train": "ILSVRC2012_img_train.tar",
    "val": "ILSVRC2012_img_val.tar",
    "devkit": "ILSVRC2012_devkit_t12.tar.gz",
}
META_FILE = "meta.bin"  # what torchvision writes from the devkit: wnid -> class names, and the val labels
Sample = tuple[str, int]  # image path, label


def list_split(
    root: Path, classes: list[str], max_per_class: int | None, hold_out: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """(path, label) of each class folder's images sorted by name: the last ``hold_out`` of each class apart (a
    minival), and the first ``max_per_class`` of the others."""
    samples: list[Sample] = []
    held: list[Sample] = []
    for label, wnid in enumerate(classes):
        folder = root / wnid
        if not folder.is_dir():
            raise DataError(
                f"{root} has no folder {wnid}/ (a class of the training split); add it or pick data.classes"
            )
        files = sorted(e.name for e in os.scandir(folder) if Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
        if len(files) <= hold_out:
            raise DataError(
                f"class folder {folder} holds {len(files)} images, not more than the {hold_out} held out for the "
                "minival; add images or lower data.minival_per_class"
            )
        kept = files[: len(files) - hold_out]
        held += [(str(folder / name), label) for name in files[len(kept) :]]
        samples += [(str(folder / name), label) for name in kept[:max_per_class]]
    return samples, held


def pick_classes(available: list[str], classes: int | Sequence[str] | None) -> list[str]:
    """All classes, ``n`` of them spread evenly over the sorted wnids (so a subset spans the hierarchy), or a list."""
    if classes is None:
        return available
    if isinstance(classes, int) and not isinstance(classes, bool):
        if not 1 <= classes <= len(available):
            raise DataError(f"data.classes={classes} must be between 1 and the {len(available)} classes found")
        return [available[i * len(available) // classes] for i in range(classes)]
    wanted = [str(c) for c in classes]
    if missing := [c for c in wanted if c not in available]:
        raise DataError(f"data.classes names {', '.join(missing[:5])} not among the {len(available)} class folders")
    if len(set(wanted)) != len(wanted):
        raise DataError("data.classes lists a class twice; give each wnid once")
    return wanted


def unpack_archives(source: Path, target: Path, splits: Sequence[str]) -> None:
    """Turn the official ILSVRC2012 archives in ``source`` into ``target/<split>/<wnid>/`` (and ``target/meta.bin``
    from the devkit) with torchvision's parsers, checksums included. ``source`` is only read.

    torchvision's parsers read their archive from, and write into, one root: ``target`` gets links to the
    archives. Each split is unpacked into ``<split>.partial`` and renamed when complete, so an interrupted run
    never leaves a half tree that looks whole.
    """
    from torchvision.datasets import imagenet as tv

    need = [s for s in splits if not (target / s).is_dir()]
    if not need:
        return
    wanted = [ARCHIVES[s] for s in need if s in ARCHIVES]
    if "val" in need and not (target / META_FILE).exists():
        wanted.append(ARCHIVES["devkit"])  # the val labels live in the devkit
    missing = [a for a in wanted if not (source / a).is_file()]
    if missing or len(wanted) < len(need):
        folders = " + ".join(f"{s}/<wnid>/" for s in need)
        raise DataError(
            f"no ImageNet at {source}: {folders} not found, nor the archives to make them (missing "
            f"{', '.join(missing) or 'archives for ' + ', '.join(need)}); put them there or set data.path (or ALEXNET_IMAGENET)"
        )
    target.mkdir(parents=True, exist_ok=True)
    for archive in wanted:
        link = target / archive
        if not link.exists():
            link.symlink_to((source / archive).resolve())
    try:
        if ARCHIVES["devkit"] in wanted:
            tv.parse_devkit_archive(str(target))
        for split in need:
            partial = target / f"{split}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            log.info("unpacking %s into %s (once)", ARCHIVES[split], target / split)
            if split == "train":
                tv.parse_train_archive(str(target), folder=partial.name)
            else:
                tv.parse_val_archive(str(target), wnids=read_meta(target)[1], folder=partial.name)
            os.replace(partial, target / split)
    except DataError:
        raise
    except RuntimeError as err:  # torchvision's checksum check
        raise DataError(f"{err} ".split(". ")[0] + f" (checksum); download it again into {source}") from err


def write_class_names(source: Path, target: Path) -> None:
    """Parse the devkit lying in ``source`` (only read) into ``target/meta.bin`` once, when neither has one."""
    from torchvision.datasets import imagenet as tv

    if (source / META_FILE).exists() or (target / META_FILE).exists():
        return
    if not (source / ARCHIVES["devkit"]).is_file():
        return
    target.mkdir(parents=True, exist_ok=True)
    link = target / ARCHIVES["devkit"]
    if not link.exists():
        link.symlink_to((source / ARCHIVES["devkit"]).resolve())
    try:
        tv.parse_devkit_archive(str(target))
    except RuntimeError as err:
        log.warning("class names unavailable: %s", err)


def devkit_names(*folders: Path) -> dict[str, str]:
    """wnid -> human-readable name from the first of ``folders`` holding a devkit ``meta.bin`` (read only)."""

    folder = next((f for f in folders if (f / META_FILE).exists()), None)
    if folder is None:
        return {}
    wnid_to_classes, _ = read_meta(folder)
    return {wnid: ", ".join(names) for wnid, names in wnid_to_classes.items()}


def read_meta(folder: Path) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """``folder/meta.bin`` as torchvision writes it from the devkit (wnid -> class names, the val split's wnids),
    loaded weights-only; anything else is a one-line error naming the file."""
    from torchvision.datasets import imagenet as tv

    path = folder / META_FILE
    try:
        names, val_wnids = tv.load_meta_file(str(folder))
        if not isinstance(names, dict) or not isinstance(val_wnids, list):
            raise TypeError("not a (dict, list) pair")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, OSError) as err:
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path} is not the class list torchvision writes from the devkit ({why[:120]}); delete it "
                        "to rebuild it from the devkit archive, or to run without class names") from err  # fmt: skip
    return names, val_wnids
