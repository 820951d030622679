"""Model A -> dataset B: export a trained model as a pretrained checkpoint, and load one with explanations.

``headstart pretrain`` trains on dataset A like ``fit`` and then writes ``pretrained.safetensors`` (the best
weights: backbone and head) plus ``pretrained.json`` (the backbone's architecture, the classes, the input
normalisation) into the run directory. ``fit --pretrain PATH`` accepts that run directory, the file, any
headstart run directory, or a foreign checkpoint, and:

* compares the recorded architecture with the model being built and, when weights do not fit, names the
  config values that differ (``backbone.widths: checkpoint [16, 32, 64], this config [32, 64, 128]``)
  instead of a shape dump;
* loads the backbone (prefixes aligned, key report printed);
* loads the head too when it has the same shape and the same class names (the usual "shifted B, same
  labels" case), and otherwise leaves it freshly initialised with a note saying why. ``pretrain_head``
  overrides that: ``reset`` when the class ids match but mean other things (digits 0-9 in A, letters A-J
  stored as 0-9 in B), ``keep`` to require the head (an error names why it cannot be loaded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.errors import CheckpointError
from headstart.train.checkpoint import (
    KeyReport,
    check_key_report,
    match_state_dict,
    read_state_dict,
    save_weights,
)

__all__ = ["PRETRAINED_META", "PRETRAINED_WEIGHTS", "PretrainReport", "export_pretrained", "load_pretrained",
           "read_pretrained_record"]

PRETRAINED_WEIGHTS = "pretrained.safetensors"
PRETRAINED_META = "pretrained.json"


@dataclass
class PretrainReport:
    source: str
    backbone: KeyReport
    head_loaded: bool
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        head = "head loaded (same classes)" if self.head_loaded else "head freshly initialised"
        return "\n".join([f"Pretrained weights from {self.source}: {head}.", self.backbone.format(), *self.notes])


def export_pretrained(run_dir: str | Path, model: Any, extra: dict[str, Any]) -> Path:
    """Write ``pretrained.safetensors`` + ``pretrained.json`` into ``run_dir`` from the loaded best weights."""
    run = Path(run_dir)
    meta = {"format": "headstart-pretrained", "architecture": model.backbone.architecture(),
            "n_classes": model.n_classes, "classes": list(model.class_names), **extra}
    path = run / PRETRAINED_WEIGHTS
    save_weights(model.weights_state(), path, meta)  # pretrained.json: the record + the file's digest
    return path


def _resolve(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """The weights to read for ``path`` and the architecture record beside them, if any."""
    if path.is_dir():
        if (path / PRETRAINED_WEIGHTS).exists():
            return path / PRETRAINED_WEIGHTS, _read_meta(path / PRETRAINED_META)
        return path, None  # any run dir / HF dir: read_state_dict finds the weights
    if path.name == PRETRAINED_WEIGHTS:
        return path, _read_meta(path.with_name(PRETRAINED_META))
    return path, None


def read_pretrained_record(path: str | Path) -> dict[str, Any] | None:
    """The record (``pretrained.json``) of an export, given its run directory or weights file; None for other
    checkpoints. Modalities read their ``data_state`` from it (the vocabularies the encoder was trained with)."""
    path = Path(path)
    return _resolve(path)[1] if path.exists() else None


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def architecture_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``backbone.<key>: checkpoint X, this config Y`` for every architecture value that differs.

    A single-input checkpoint loads into a Siamese model's shared encoder (and back): the encoders are
    compared then, not the wrappers."""
    siamese = [arch.get("type") == "SiameseBackbone" for arch in (recorded, current)]
    if siamese[0] != siamese[1]:
        recorded = recorded.get("encoder", recorded) if siamese[0] else recorded
        current = current.get("encoder", current) if siamese[1] else current
    a, b = _flatten(recorded), _flatten(current)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key == "type" or a.get(key) == b.get(key):
            continue
        lines.append(f"backbone.{key.removeprefix('config.')}: checkpoint {a.get(key)!r}, this config {b.get(key)!r}")
    if a.get("type") != b.get("type"):
        lines.insert(0, f"backbone type: checkpoint {a.get('type')}, this config {b.get('type')}")
    return lines


HEAD_POLICIES = ("auto", "keep", "reset")


def load_pretrained(model: Any, path: str | Path, verbose: bool = True, head: str = "auto",
                    targets: list[str] | None = None) -> PretrainReport:
    """Load a pretrained model's backbone (and head per ``head``: auto / keep / reset) into ``model``.

    ``targets``: the label column(s) this run learns; ``auto`` keeps the head only when the export learnt the same
    ones (HIV's 0 / 1 and BBBP's 0 / 1 are the same class names but other labels)."""
    if head not in HEAD_POLICIES:
        raise CheckpointError(f"pretrain_head '{head}' is not one of {', '.join(HEAD_POLICIES)}.")
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"pretrain (--pretrain) '{path}' does not exist (resolved to {path.resolve()}). Check the "
                              f"path: a `headstart pretrain` run directory, its pretrained.safetensors, or a checkpoint.")
    weights, meta = _resolve(path)
    source = read_state_dict(weights, where="The pretrained checkpoint (pretrain / --pretrain)")
    backbone_src = {k.removeprefix("backbone."): v for k, v in source.items() if not k.startswith("head.")}
    report, mapped = match_state_dict(model.backbone.state_dict(), backbone_src)
    differences = []
    if meta is not None and "architecture" in meta:
        differences = architecture_differences(meta["architecture"], model.backbone.architecture())
    if report.shape_mismatched or (report.missing and differences) or not report.matched:
        if differences:
            raise CheckpointError(
                f"The pretrained checkpoint '{path}' was written by a different architecture, so its weights do not "
                f"fit ({len(report.shape_mismatched)} shape-mismatched, {len(report.missing)} missing of "
                f"{len(report.matched) + len(report.missing)} keys). Set these config values to the checkpoint's to "
                f"load it:\n  " + "\n  ".join(differences) + f"\n{report.format()}"
            )
        check_key_report(report, path, list(source), list(model.backbone.state_dict()))
    model.backbone.load_state_dict(mapped, strict=False)
    head_src = {k.removeprefix("head."): v for k, v in source.items() if k.startswith("head.")}
    if head == "reset":
        head_loaded, notes = False, ["note: head re-initialised (pretrain_head: reset); only the backbone was loaded."]
    else:
        head_loaded, notes = _load_head(model.head, head_src, meta, list(getattr(model, "class_names", []) or []),
                                       force=head == "keep", targets=targets)
        if head == "keep" and not head_loaded:
            raise CheckpointError(f"pretrain_head is 'keep' but the head in '{path}' cannot be loaded: "
                                  f"{notes[0].removeprefix('note: ')} Use pretrain_head: auto (re-initialise it) or "
                                  f"match the checkpoint's head and classes.")
    result = PretrainReport(str(path), report, head_loaded, notes)
    if verbose:
        print(result.format())
    return result


def _load_head(head: nn.Module, source: dict[str, torch.Tensor], meta: dict[str, Any] | None,
               classes: list[str], force: bool = False, targets: list[str] | None = None) -> tuple[bool, list[str]]:
    if not source:
        return False, ["note: the checkpoint has no head; the head starts from scratch."]
    src_targets = (meta or {}).get("targets")
    if not force and src_targets and targets and list(src_targets) != list(targets):
        return False, [f"note: head re-initialised: the checkpoint learnt {_short(src_targets)}, this run learns "
                       f"{_short(targets)}; only the backbone was loaded (pretrain_head: keep loads it anyway)."]
    target = head.state_dict()
    fits = set(source) == set(target) and all(tuple(source[k].shape) == tuple(target[k].shape) for k in target)
    src_classes = [str(c) for c in (meta or {}).get("classes") or []]
    if fits and not force and src_classes and classes and src_classes != [str(c) for c in classes]:
        return False, [f"note: head re-initialised: the checkpoint's classes {_short(src_classes)} are not this task's "
                       f"{_short(classes)}; only the backbone was loaded (pretrain_head: keep loads it anyway)."]
    if fits:
        head.load_state_dict(source)
        return True, []
    n_src = (meta or {}).get("n_classes")
    n_now = getattr(head, "n_classes", None)
    why = (f"the checkpoint's head has {n_src} classes and this task has {n_now}" if n_src and n_src != n_now
           else "the checkpoint's head has another shape (hidden sizes or head type differ)")
    return False, [f"note: head re-initialised: {why}; only the backbone was loaded."]


def _short(classes: list[str], n: int = 5) -> str:
    return "[" + ", ".join(map(str, classes[:n])) + (", ...]" if len(classes) > n else "]")
