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
from alexnet_lab.errors import UserError


class Refused(UserError, ValueError):
    """A config from a file asks for something the project's own configs do not offer."""


@functools.cache
def offered() -> frozenset[tuple[str, str, str]]:
    """(place, key, value) of every instantiation key in the project's configs: ``("model", "_target_",
    "alexnet_lab.models.AlexNet")``, ``("trainer.plugins.*", "_target_", ...)``, ``("optimizer", "_partial_", "True")``;
    a config group's file puts its content under the group's name."""
    root = Path(conf.__file__).parent
    found: set[tuple[str, str, str]] = set()
    for path in root.rglob("*.yaml"):
        head = path.read_text().split("\n", 1)[0]
        group = ".".join(path.relative_to(root).parts[:-1])
        if "@package _global_" in head or not group:
            group = ""
        elif match := re.search(r"@package (\S+)", head):
            group = match.group(1)
        found.update(_specials(OmegaConf.to_container(OmegaConf.load(path), resolve=False), group))
    return frozenset(found)


SPECIAL = re.compile(r"^_\w+_$")  # Hydra's instantiation keys: _target_, _partial_, _args_, _recursive_, _convert_


def _specials(node: Any, place: str) -> list[tuple[str, str, str]]:
    """(place, key, value) of each of Hydra's instantiation keys under ``node``; list and tuple items are ``*``."""
    out = []
    if isinstance(node, dict):
        out += [(place, str(k), str(v)) for k, v in node.items() if SPECIAL.match(str(k))]
        for key, value in node.items():
            out += _specials(value, f"{place}.{key}" if place else str(key))
    elif isinstance(node, (list, tuple)):
        for value in node:
            out += _specials(value, f"{place}.*" if place else "*")
    return out


def check_config(tree: Any, source: str) -> None:
    """Refuse ``tree`` (a config as plain containers, from ``source``) if it holds any of Hydra's instantiation keys
    (``_target_`` with its class, ``_partial_``, ``_args_``, ...) that the project's configs do not have at that
    place, nested ones and those inside lists or tuples included."""
    allowed = offered()
    for place, key, value in _specials(tree, ""):
        if (place, key, value) not in allowed:
            where = f"{place}.{key}" if place else key
            what = "a class" if key == "_target_" else "a setting"
            raise Refused(f"{source}: {where}={value!r} is not {what} this project's configs offer there; refused, "
                          "nothing from it was run")  # fmt: skip


def check_values(tree: Any, source: str) -> None:
    """Refuse ``tree`` if any value in it is an interpolation (``${...}`` runs resolvers when read)."""
    for place, value in _leaves(tree, ""):
        if isinstance(value, str) and "${" in value:
            raise Refused(
                f"{source}: {place}={value!r} is an interpolation; refused (a file's values are taken as data)"
            )


def _leaves(node: Any, place: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{place}.{k}" if place else str(k))]
    if isinstance(node, (list, tuple)):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, f"{place}.{i}")]
    return [(place, node)]


# overrides that would move a run's files out of its dir (or name them), or change how Hydra runs: never from a file
_PLACES = re.compile(r"^(hydra|paths)(\.|$)|\.(dirpath|filename|save_dir|default_root_dir|log_dir|root_dir|cache_dir|"
                     r"tracking_uri|name|version|sub_dir|prefix|plugins)$")  # fmt: skip


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
        if override.is_delete():
            continue  # removing a node moves nothing
        value = override.value()
        nested = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        if any(_PLACES.search(place) for place, _ in _leaves(nested, "")) or _PLACES.search(key):
            raise Refused(f"{source}: {text!r} would move the run's files or change how it runs; refused (give it "
                          "on today's command line if it is yours)")  # fmt: skip
        if isinstance(value, (dict, list)):
            check_config(nested, source)
    return texts
