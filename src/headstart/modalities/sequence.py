"""Event sequences (transactions per entity) with a ptls encoder: ``task: sequence_classification``.

Rows are ``EventSet``s (one item per entity: its events sorted by time, the latest ``max_events`` kept).
The vocabularies and numeric statistics of the training split are the run's data state
(``data_state.json``): the encoder's embedding tables are sized by them, and new files for evaluate /
predict / embed are encoded with them (values unseen in training map to the OOV index).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.errors import ConfigError, DataError
from headstart.modalities.base import Inputs, Modality, register_modality

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from headstart.backbones import Backbone
    from headstart.config import RunConfig

__all__ = ["SequenceModality"]


class SequenceModality(Modality):
    name, task = "sequence", "sequence_classification"
    kinds = ("classification", "regression")
    baseline = "rfm_lightgbm"  # headstart.baselines: the classic row of compare / fit --baseline

    def load_splits(self, cfg: RunConfig, seed: int) -> Any:
        from headstart.data.events import load_event_splits

        return load_event_splits(cfg.data, seed, encoders=_pretrained_encoders(cfg), regression=cfg.is_regression,
                                 standardize=cfg.loss.standardize)

    def labels(self, rows: Any) -> np.ndarray:
        return np.asarray(rows.labels)  # class indices, or numbers of a regression run

    def row_ids(self, rows: Any) -> np.ndarray:
        return np.asarray(rows.rows, dtype=np.int64)

    def take(self, rows: Any, idx: np.ndarray) -> Any:
        return rows.subset(idx)

    def describe_split(self, rows: Any) -> str:
        return f"{len(rows)} entities ({int(np.sum(rows.lengths))} events)"

    def data_state(self, splits: Any) -> dict[str, Any] | None:
        return {"events": splits.encoders.to_dict()}

    def build_backbone(self, cfg: RunConfig, state: dict[str, Any] | None) -> Backbone:
        from headstart.backbones import build_backbone

        if cfg.backbone.module is not None or cfg.backbone.type != "ptls":
            return build_backbone(cfg.backbone)  # the user's own encoder
        if state is None or "events" not in state:
            raise ConfigError(
                "backbone.sequence builds the ptls encoder from the training data (one embedding table per "
                "categorical field, sized by its vocabulary), so it cannot be built without reading data.train. "
                "Check that data.train and data.events describe a readable events table, or name your own "
                "encoder in backbone.module."
            )
        from headstart.backbones import build_sequence_encoder
        from headstart.data.events import EventEncoders

        fields = EventEncoders.from_dict(state["events"]).fields
        return build_sequence_encoder(cfg.backbone.sequence, fields.categorical, fields.numeric)

    def loaders(self, cfg: RunConfig, parts: dict[str, Any], backbone: Backbone) -> dict[str, DataLoader]:
        from headstart.data.events import collate_events
        from headstart.experiments.build import make_loader

        return {split: make_loader(cfg, rows, collate_events, train=split == "train")
                for split, rows in parts.items() if rows is not None}

    def read_inputs(self, loaded: Any, path: str | Path, require_labels: bool) -> Inputs:
        from headstart.data.events import EventEncoders, collate_events, read_events
        from headstart.experiments.build import make_loader

        state = loaded.data_state
        if state is None or "events" not in state:
            raise DataError(f"The run '{loaded.run_dir}' has no data_state.json (the vocabularies of its training "
                            f"data), so new event files cannot be encoded like its training data. Copy the whole "
                            f"run directory, or rerun the fit.")
        encoders = EventEncoders.from_dict(state["events"])
        rows = read_events(loaded.cfg.data, path, encoders, labelled=require_labels, label_map=loaded.label_map)
        labels = None if rows.labels is None else self.labels(rows)
        loader = make_loader(loaded.cfg, rows, collate_events, train=False)
        return Inputs(loader, self.row_ids(rows), labels)


def _pretrained_encoders(cfg: RunConfig) -> Any:
    """The vocabularies ``cfg.pretrain``'s export was trained with (its record's ``data_state``), or None: the
    encoder's embedding rows mean those values, so fine-tuning encodes with them instead of fitting new ones."""
    if not cfg.pretrain:
        return None
    from headstart.data.events import EventEncoders
    from headstart.train.pretrained import read_pretrained_record

    events = ((read_pretrained_record(cfg.pretrain) or {}).get("data_state") or {}).get("events")
    if events is None:
        return None
    return EventEncoders.from_dict(events, f"The vocabularies in the pretrained record of '{cfg.pretrain}'")


register_modality(SequenceModality())
