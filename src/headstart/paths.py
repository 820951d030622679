"""One path rule: a relative path in a config file resolves from that file's folder; a path given on the
command line (``--output-dir``, ``--pretrain``, ``--set data.train=...``) from the working directory.

A config then means the same thing wherever it is run from, and a command line means what the shell shows.
Every path is made absolute when the config loads, so the run's saved ``config.yaml`` names real files.
When a file is missing, the message states the rule and shows both resolutions, so a path written for
the other rule is easy to spot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PATH_KEYS", "PathOrigin", "missing_path_problems", "resolve_paths"]

# Dotted config keys that hold paths; the bool says whether the path must exist when the config loads.
PATH_KEYS: dict[str, bool] = {
    "data.train": True, "data.val": True, "data.test": True, "data.mix.path": True, "data.events.labels": True,
    "pretrain": True, "backbone.checkpoint": True, "backbone.name_or_path": False,
    "output_dir": False, "cache.dir": False, "ood.id_data": True, "ood.ood_data": True,
    "backbone.unimol.weights": False, "backbone.unimol.dictionary": False, "backbone.extend_vocab.from": True,
}
# Values of a path key that name something else (backbone.extend_vocab.from: train = the training split).
_KEYWORDS: dict[str, tuple[str, ...]] = {"backbone.extend_vocab.from": ("train",)}
_RULE = ("relative paths in a config file resolve from the config file's folder; paths given on the command "
         "line resolve from the working directory")


@dataclass
class PathOrigin:
    key: str
    written: str  # the text as the user wrote it
    source: str  # "config" or "command line"
    base: Path  # the folder it was resolved from


def _get(raw: dict[str, Any], keys: list[str]) -> Any:
    node: Any = raw
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def _set(raw: dict[str, Any], keys: list[str], value: str) -> None:
    node = raw
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value


def _is_hub_id(key: str, text: str, base: Path) -> bool:
    """``org/model`` for a Hugging Face model is a name, not a path, unless such a folder exists."""
    if key != "backbone.name_or_path" or text.startswith((".", "~", os.sep)):
        return False
    return not (base / text).exists()


def resolve_paths(raw: dict[str, Any], base: Path, source: str,
                  only: set[str] | None = None) -> dict[str, PathOrigin]:
    """Make the relative path values of ``raw`` absolute from ``base`` (in place); return where each came from.

    ``only`` restricts it to the keys a command line set (the rest came from the file and are done already).
    """
    origins: dict[str, PathOrigin] = {}
    for key in PATH_KEYS:
        if only is not None and key not in only:
            continue
        keys = key.split(".")
        value = _get(raw, keys)
        if not isinstance(value, str) or not value.strip():
            continue
        text = value.strip()
        if _is_hub_id(key, text, base) or text in _KEYWORDS.get(key, ()):
            continue
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = base / path
        _set(raw, keys, str(path.resolve()))
        origins[key] = PathOrigin(key, value, source, base)
    return origins


def missing_path_problems(raw: dict[str, Any], origins: dict[str, PathOrigin],
                          config_dir: Path | None = None) -> list[str]:
    """One line per path that must exist and does not: close names, the rule, and both resolutions.

    ``config_dir`` is the config file's folder: a command-line path was resolved from the working directory,
    so the other resolution shown for it is from there (an ``origin`` only knows its own base).
    """
    from headstart.errors import did_you_mean

    cwd = Path.cwd()
    problems = []
    for key, origin in origins.items():
        if not PATH_KEYS[key]:
            continue
        resolved = Path(str(_get(raw, key.split("."))))
        if resolved.exists():
            continue
        from_config = origin.source == "config"
        shown = key if from_config else _FLAGS.get(key, f"{key} (--set {key}=...)")
        line = f"{shown} '{origin.written}' does not exist (resolved to {resolved})."
        if not resolved.parent.is_dir():
            line += f" Its folder {resolved.parent} does not exist either."
        else:
            line += did_you_mean(resolved.name, [c.name for c in resolved.parent.iterdir()])
        line += f" Path rule: {_RULE}."
        other_base = cwd if from_config else config_dir
        if other_base is not None and not Path(origin.written).expanduser().is_absolute():
            other = (other_base / origin.written).resolve()
            if other != resolved:
                line += " " + _other_resolution(other, from_config, origin.base)
        problems.append(line + " Fix the path.")
    return problems


def _other_resolution(other: Path, from_config: bool, base: Path) -> str:
    """Where the path would be under the other half of the rule, and how to write it if it is there."""
    if from_config:
        line = f"From the working directory it would be {other}, which "
        rewrite = "write it relative to the config's folder"
    else:
        line = f"From the config's folder it would be {other}, which "
        rewrite = "give it relative to the working directory"
    if not other.exists():
        return line + "does not exist either."
    return line + f"exists: {rewrite} ({os.path.relpath(other, base)}) or as an absolute path."


_FLAGS = {"pretrain": "--pretrain", "output_dir": "--output-dir"}
