"""What a config read from a file may select: only what the project's own configs offer.

Checkpoints carry their run's config, run dirs their overrides; both come from elsewhere and are data. Before any of
it is composed or instantiated, every ``_target_`` in it (nested ones too) must be one that the project's own
``conf/`` puts at that place (``model`` -> one of the model classes, ``callbacks.model_checkpoint`` -> ours, ...),
no value may be an interpolation (``${...}`` runs resolvers), and stored overrides may not move a run's files.
Anything else is refused in one line that names the key; nothing from the file has run by then.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from alexnet_lab import conf


class Refused(ValueError):
    """A config from a file asks for something the project's own configs do not offer."""


@functools.cache
def offered() -> frozenset[tuple[str, str]]:
    """(place, target) of every ``_target_`` in the project's configs: ``("model", "alexnet_lab.models.AlexNet")``,
    ``("trainer.plugins.*", ...)``; a config group's file puts its content under the group's name."""
    root = Path(conf.__file__).parent
    found: set[tuple[str, str]] = set()
    for path in root.rglob("*.yaml"):
        head = path.read_text().split("\n", 1)[0]
        group = ".".join(path.relative_to(root).parts[:-1])
        if "@package _global_" in head or not group:
            group = ""
        elif match := re.search(r"@package (\S+)", head):
            group = match.group(1)
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for place, target in _targets(node, group):
            found.add((place, target))
    return frozenset(found)


def _targets(node: Any, place: str) -> list[tuple[str, str]]:
    """(place, target) of each ``_target_`` under ``node``; list items are ``*``."""
    out = []
    if isinstance(node, dict):
        if "_target_" in node:
            out.append((place, str(node["_target_"])))
        for key, value in node.items():
            out += _targets(value, f"{place}.{key}" if place else str(key))
    elif isinstance(node, list):
        for value in node:
            out += _targets(value, f"{place}.*" if place else "*")
    return out


def check_config(tree: Any, source: str, values: bool = True) -> None:
    """Refuse ``tree`` (a config as plain containers, from ``source``) if it instantiates anything the project's
    configs do not offer at that place, or (``values``) holds an interpolation."""
    allowed = offered()
    for place, target in _targets(tree, ""):
        if (place, target) not in allowed:
            where = f"{place}._target_" if place else "_target_"
            raise Refused(f"{source}: {where}={target!r} is not a class this project's configs offer there; refused, "
                          "nothing from it was run")  # fmt: skip
    for place, value in _leaves(tree, "") if values else []:
        if isinstance(value, str) and "${" in value:
            raise Refused(
                f"{source}: {place}={value!r} is an interpolation; refused (a file's values are taken as data)"
            )


def _leaves(node: Any, place: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{place}.{k}" if place else str(k))]
    if isinstance(node, list):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, f"{place}.{i}")]
    return [(place, node)]


# overrides that would move a run's files out of its dir, or change how Hydra runs: never taken from a file
_PLACES = re.compile(r"^(hydra|paths)(\.|$)|(^|\.)(dirpath|save_dir|default_root_dir|log_dir|root_dir)$")


def check_overrides(overrides: list[Any], source: str) -> list[str]:
    """A run dir's stored overrides, if each is a plain override that selects what the project offers: no
    interpolation, no key that moves the run's files, no added or deleted node (``+``/``~``) that the project's
    configs do not offer. Returns them as strings."""
    texts = [str(o) for o in overrides]
    try:
        parsed = OverridesParser.create().parse_overrides(texts)
    except HydraException as err:
        raise Refused(f"{source} holds an override Hydra cannot parse ({str(err).splitlines()[0]})") from err
    for text, override in zip(texts, parsed):
        key = override.key_or_group
        if "${" in text:
            raise Refused(f"{source}: {text!r} is an interpolation; refused (a file's values are taken as data)")
        if _PLACES.search(key):
            raise Refused(f"{source}: {text!r} would move the run's files or change how it runs; refused")
        value = override.value()
        if isinstance(value, (dict, list)):
            for part in reversed(key.split(".")):
                value = {part: value}
            check_config(value, source)
    return texts
