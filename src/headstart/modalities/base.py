"""What a modality (text, image, event sequences, ...) supplies, so that fit / compare / stack / pretrain and
inference never ask which modality they run.

A modality owns its data: reading and splitting it from ``cfg.data``, the settings the training split decides
(written into the config so the saved config.yaml rebuilds the run), its datasets / loaders / collate, the
state a run directory must keep to read new files later (vocabularies, say), and reading those new files for
``evaluate`` / ``predict`` / ``embed``. Everything else (backbones, heads, strategies, the feature cache, the
training loop) works on the backbone protocol and never sees the modality.

Register a new one with :func:`register_modality`; a config names it through ``task``
(``<modality>_classification`` or ``<modality>_regression``: ``kinds`` says which a plug-in reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from headstart.backbones import Backbone
    from headstart.baselines import ClassicBaseline
    from headstart.config import RunConfig

__all__ = ["Inputs", "Modality", "get_modality", "modality_names", "register_modality"]


@dataclass
class Inputs:
    """A new file's rows ready for the model: the loader, each row's id in the file, its labels (or None)."""

    loader: DataLoader
    rows: np.ndarray
    labels: np.ndarray | None


class Modality:
    """Base class of the modality plug-ins; subclasses set ``name`` / ``task`` and override the data hooks.

    ``rows`` below is one split as the modality holds it (a frame, image arrays, an event set): the
    experiments pass it around without looking inside, except through :meth:`labels`, :meth:`row_ids` and
    :meth:`take`.
    """

    name: str = ""
    task: str = ""
    # what its label columns can hold: class labels and / or numbers (regression)
    kinds: tuple[str, ...] = ("classification",)
    # the registered name of its classic baseline (headstart.baselines: tfidf_logreg ...); "" for none
    baseline: str = ""

    # ----- before anything runs ------------------------------------------------------------------------
    def check(self, cfg: RunConfig, training: bool = True) -> None:
        """Refuse what cannot work with this modality before the run directory is touched (``training``
        False: ``inspect``, which only builds the model)."""

    # ----- data -------------------------------------------------------------------------------------------
    def load_splits(self, cfg: RunConfig, seed: int) -> Any:
        """The train / val / (test) rows ``cfg.data`` describes, carved with ``seed``, with ``label_map``."""
        raise NotImplementedError

    def settle(self, cfg: RunConfig, splits: Any) -> None:
        """Write what the training split decides into ``cfg`` (pairs, channels, normalisation ...)."""

    def labels(self, rows: Any) -> np.ndarray:
        """The class indices of ``rows``."""
        raise NotImplementedError

    def row_ids(self, rows: Any) -> np.ndarray:
        """Each row's id in its source (file row number, entity id); positions when unknown."""
        return np.arange(len(self.labels(rows)), dtype=np.int64)

    def take(self, rows: Any, idx: np.ndarray) -> Any:
        """The rows at positions ``idx`` (a stack fold)."""
        raise NotImplementedError

    def describe_split(self, rows: Any) -> str:
        """How many rows a split holds, in the modality's words (for the run's console line)."""
        return f"{len(self.labels(rows))} rows"

    def classic_baseline(self) -> ClassicBaseline | None:
        """The classic model ``compare`` and ``fit --baseline`` report beside the fine-tuned ones (fitted on the
        same splits), or None where the modality has none."""
        from headstart.baselines import get_baseline

        return get_baseline(self.baseline) if self.baseline else None

    # ----- state a run keeps for reading new files ----------------------------------------------------------
    def data_state(self, splits: Any) -> dict[str, Any] | None:
        """JSON-serialisable state the model and new files need (vocabularies ...); None when there is none."""
        return None

    def save_state(self, run: Path, state: dict[str, Any] | None, backbone: Backbone | None = None) -> None:
        """Keep ``data_state`` in the run directory (``data_state.json``); ``backbone`` (the built encoder) where
        the state is also worth keeping in its own form (text: the extended tokenizer)."""
        if state is not None:
            from headstart.fileio import write_json

            write_json(run / "data_state.json", state)

    def write_splits(self, run: Path, splits: Any) -> None:
        """Record which source rows went to which split (``splits/`` of the run), where the modality carves them
        itself; by default nothing (the data files are the record)."""

    def load_state(self, run: Path) -> dict[str, Any] | None:
        import json

        path = run / "data_state.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    # ----- model and loaders ----------------------------------------------------------------------------------
    def build_backbone(self, cfg: RunConfig, state: dict[str, Any] | None) -> Backbone:
        """The encoder ``cfg.backbone`` describes; ``state`` (from :meth:`data_state`) where it needs the data."""
        from headstart.backbones import build_backbone

        return build_backbone(cfg.backbone)

    def loaders(self, cfg: RunConfig, parts: dict[str, Any], backbone: Backbone) -> dict[str, DataLoader]:
        """One loader per split in ``parts`` (None splits skipped); training batches seeded by trainer.seed."""
        raise NotImplementedError

    def coverage(self, cfg: RunConfig, train: Any, backbone: Backbone, seed: int) -> Any:
        """How well the encoder's input vocabulary reads the training rows (text: the tokenizer's unknown-token
        and truncation rates, a ``TokenizerCoverage``); None where that does not apply."""
        return None

    def cache_blocker(self, cfg: RunConfig, loaders: dict[str, DataLoader]) -> str | None:
        """Why the frozen-prefix feature cache cannot be exact for this data (None: it can)."""
        return None

    def export_record(self, cfg: RunConfig) -> dict[str, Any]:
        """What a pretrained export must carry besides the backbone config (image normalisation ...)."""
        return {}

    # ----- inference on new files ---------------------------------------------------------------------------
    def read_inputs(self, loaded: Any, path: str | Path, require_labels: bool) -> Inputs:
        """``--data`` of evaluate / predict / embed, read like the run's training data."""
        raise NotImplementedError


_REGISTRY: dict[str, Modality] = {}
_BUILTIN_LOADED: list[bool] = []


def register_modality(modality: Modality) -> Modality:
    """Make ``modality`` reachable by its name (``cfg.task`` is ``<name>_<kind>``)."""
    if not modality.task or not modality.name:
        raise ValueError(f"{type(modality).__name__} needs a name and a task")
    _REGISTRY[modality.name] = modality
    return modality


def modality_names() -> list[str]:
    """Every task a registered plug-in reads (``text_classification``, ``molecule_regression``, ...)."""
    _load_builtin()
    return sorted(f"{m.name}_{kind}" for m in _REGISTRY.values() for kind in m.kinds)


def get_modality(task: str) -> Modality:
    """The plug-in of ``task`` (``text_classification``, ``molecule_regression``, ...)."""
    _load_builtin()
    name, _, kind = task.rpartition("_")
    modality = _REGISTRY.get(name)
    if modality is None or kind not in modality.kinds:
        tasks = modality_names()
        supported = (f" The {name} plug-in reads {', '.join(f'{name}_{k}' for k in modality.kinds)} only."
                     if modality is not None else "")
        raise ConfigError(f"task '{task}' has no modality plug-in.{supported} Use one of {tasks}."
                          f"{did_you_mean(task, tasks)}")
    return modality


def _load_builtin() -> None:
    """The built-in plug-ins register themselves on import (kept lazy: the CLI imports this module early)."""
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED.append(True)
    import headstart.modalities.image
    import headstart.modalities.molecule
    import headstart.modalities.sequence
    import headstart.modalities.text  # noqa: F401
