"""Reloading a finished run for ``evaluate``, ``predict`` and ``embed``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch.utils.data import DataLoader

from headstart.cache import pooled_features
from headstart.config import RunConfig, load_config
from headstart.data import LabelMap
from headstart.data.targets import RegressionTargets, TaskTargets, read_label_map
from headstart.experiments.build import build_configured_backbone, build_model
from headstart.experiments.rundir import require_run_dir
from headstart.modalities import Inputs, get_modality
from headstart.train.checkpoint import match_state_dict, read_state_dict
from headstart.train.module import FinetuneModule

__all__ = ["LoadedRun", "embed_file", "evaluate_file", "load_run", "predict_file"]


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: RunConfig
    model: FinetuneModule
    label_map: LabelMap | RegressionTargets | TaskTargets  # labels.json: classes, numeric targets or tasks
    data_state: dict[str, Any] | None = None  # the modality's state from training (vocabularies ...)

    @property
    def tokenizer(self) -> Any:
        """The backbone's tokenizer (None for encoders that read no text)."""
        return self.model.backbone.load_tokenizer()


def load_run(run_dir: str | Path, verbose: bool = True) -> LoadedRun:
    """Rebuild the model a run describes and load its best weights (exact keys required)."""
    run = require_run_dir(run_dir)
    cfg = load_config(run / "config.yaml")
    label_map = read_label_map(run / "labels.json")
    data_state = get_modality(cfg.task).load_state(run)
    backbone = build_configured_backbone(cfg, data_state, verbose=False)
    model = build_model(cfg, label_map.n_classes, [str(c) for c in label_map.classes], backbone=backbone,
                        verbose=False, target=label_map.spec())
    state = read_state_dict(run / "checkpoints" / "best.safetensors")
    target = model.weights_state()
    report, _ = match_state_dict(target, state)
    if report.missing or report.shape_mismatched or report.unexpected or report.source_prefix != report.target_prefix:
        from headstart.errors import CheckpointError

        raise CheckpointError(
            f"The weights in '{run}/checkpoints/best.safetensors' do not fit the model rebuilt from its "
            f"config.yaml (was the config edited?).\n{report.format()}"
        )
    model.load_state_dict(state, strict=False)
    model.eval()
    return LoadedRun(run, cfg, model, label_map, data_state)


def _inputs(loaded: LoadedRun, path: str | Path, require_labels: bool) -> Inputs:
    return get_modality(loaded.cfg.task).read_inputs(loaded, path, require_labels)


def evaluate_file(run_dir: str | Path, data: str | Path) -> dict[str, float]:
    loaded = load_run(run_dir)
    inputs = _inputs(loaded, data, require_labels=True)
    logits, labels = loaded.model.predict_logits(_progress(inputs.loader, "evaluate"))
    return loaded.model.target.metrics(labels.numpy(), loaded.model.decode(logits).numpy())


def predict_file(run_dir: str | Path, data: str | Path) -> pd.DataFrame:
    """Predictions in input row order: the label and one probability column per class (classification), the
    number(s) in the data's unit (regression), or one probability per task."""
    loaded = load_run(run_dir)
    inputs = _inputs(loaded, data, require_labels=False)
    logits, _ = loaded.model.predict_logits(_progress(inputs.loader, "predict"))
    out = pd.DataFrame({"row": inputs.rows})
    for key, values in loaded.label_map.output_columns(loaded.model.decode(logits).numpy()).items():
        out[key] = values
    if inputs.labels is not None:
        for key, values in loaded.label_map.label_columns(inputs.labels).items():
            out[key] = values
    return out


def embed_file(run_dir: str | Path, data: str | Path, use_cache: bool = True) -> pd.DataFrame:
    """One ``embedding`` list column (backbone features, eval mode) per input row.

    With ``use_cache`` the features of a text run are the feature cache's pooled entry for these weights
    and these rows: read when present (e.g. left by a linear probe on the same file), written otherwise.
    """
    loaded = load_run(run_dir)
    inputs = _inputs(loaded, data, require_labels=False)
    feats = pooled_features(loaded.model, inputs.loader, loaded.cfg.cache, loaded.cfg.data.eval_batch_size,
                            use_cache=use_cache, progress=lambda loader: _progress(loader, "embed"))
    out = pd.DataFrame({"row": inputs.rows})
    out["embedding"] = list(feats)
    if inputs.labels is not None:
        for key, values in loaded.label_map.label_columns(inputs.labels).items():
            out[key] = values
    return out


def _progress(loader: DataLoader, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, unit="batch", leave=False)
