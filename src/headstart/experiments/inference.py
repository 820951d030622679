"""Reloading a finished run for ``evaluate``, ``predict`` and ``embed``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from headstart.cache import pooled_features
from headstart.config import RunConfig, load_config
from headstart.data import LabelMap, TextClassificationDataset, TextCollator, load_text_frame
from headstart.data.readers import SUFFIXES
from headstart.experiments.build import build_model, make_loader
from headstart.experiments.rundir import require_run_dir
from headstart.metrics import classification_metrics
from headstart.train.checkpoint import match_state_dict, read_state_dict
from headstart.train.module import FinetuneModule

__all__ = ["LoadedRun", "embed_file", "evaluate_file", "load_run", "predict_file"]


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: RunConfig
    model: FinetuneModule
    label_map: LabelMap
    tokenizer: Any


def load_run(run_dir: str | Path, verbose: bool = True) -> LoadedRun:
    """Rebuild the model a run describes and load its best weights (exact keys required)."""
    run = require_run_dir(run_dir)
    cfg = load_config(run / "config.yaml")
    label_map = LabelMap.from_json(run / "labels.json")
    model = build_model(cfg, label_map.n_classes, [str(c) for c in label_map.classes], verbose=False)
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
    return LoadedRun(run, cfg, model, label_map, model.backbone.load_tokenizer())


@dataclass
class _Inputs:
    """A new file's rows ready for the model: the loader, each row's position in the file, its labels."""

    loader: DataLoader
    rows: np.ndarray
    labels: np.ndarray | None  # class indices, when the file has labels


def _inputs(loaded: LoadedRun, path: str | Path, require_labels: bool) -> _Inputs:
    if loaded.cfg.task == "image_classification":
        return _image_inputs(loaded, path, require_labels)
    frame = _frame(loaded, path, require_labels)
    dataset = TextClassificationDataset(frame, loaded.tokenizer, loaded.cfg.data.max_length,
                                        siamese=loaded.cfg.backbone.pair == "siamese")
    collate = TextCollator(loaded.tokenizer.pad_token_id or 0)
    labels = frame["label"].to_numpy() if "label" in frame else None
    return _Inputs(make_loader(loaded.cfg, dataset, collate, train=False), frame["row"].to_numpy(), labels)


def _image_inputs(loaded: LoadedRun, path: str | Path, require_labels: bool) -> _Inputs:
    """Images read like the training data and normalised with the run's training-split statistics."""
    from dataclasses import replace

    from headstart.data.images import ImageDataset, read_images
    from headstart.errors import DataError

    d = loaded.cfg.data
    arrays = read_images(path, image_column=d.image_column, label_column=d.label_column, where="--data")
    pairs = loaded.cfg.backbone.pair == "siamese"
    channels = loaded.cfg.backbone.in_channels or arrays.x.shape[1]
    if arrays.is_pairs != pairs or arrays.x.shape[1] != channels:
        def kind(is_pairs: bool) -> str:
            return "image pairs (xa, xb)" if is_pairs else "single images"

        raise DataError(f"--data '{path}' holds {kind(arrays.is_pairs)} with {arrays.x.shape[1]} channel(s), but "
                        f"the run was trained on {kind(pairs)} with {channels} channel(s); give data shaped like "
                        f"its training data ({loaded.cfg.data.train}).")
    labels = None
    if arrays.y is not None:
        labels = np.asarray(loaded.label_map.encode(arrays.y.tolist(), f"--data ({path})"), dtype=np.int64)
        arrays = replace(arrays, y=labels)
    elif require_labels:
        raise DataError(f"--data '{path}' has no labels, so it cannot be scored: idx images need their labels file "
                        f"beside them, .npz a 'y' array, Parquet a '{d.label_column}' column. Use `predict` for "
                        f"unlabelled images.")
    mean, std = (d.mean, d.std) if d.normalize else (None, None)
    loader = DataLoader(ImageDataset(arrays, mean, std), batch_size=d.eval_batch_size)
    return _Inputs(loader, np.arange(len(arrays.x)), labels)


def _frame(loaded: LoadedRun, path: str | Path, require_labels: bool) -> pd.DataFrame:
    d = loaded.cfg.data
    # A file named like the training data (.txt read as tsv, say) is read the same way; others by suffix.
    fmt = "auto" if any(str(path).lower().endswith(s) for s in SUFFIXES) else d.format
    return load_text_frame(
        str(path), text_column=d.text_column, text_pair_column=d.text_pair_column, label_column=d.label_column,
        label_map=loaded.label_map, fmt=fmt, require_labels=require_labels, where="--data",
        column_names=d.column_names,
    )


def evaluate_file(run_dir: str | Path, data: str | Path) -> dict[str, float]:
    loaded = load_run(run_dir)
    inputs = _inputs(loaded, data, require_labels=True)
    logits, labels = loaded.model.predict_logits(_progress(inputs.loader, "evaluate"))
    proba = torch.softmax(logits, dim=-1).numpy()
    return classification_metrics(labels.numpy(), proba, loaded.label_map.n_classes)


def predict_file(run_dir: str | Path, data: str | Path) -> pd.DataFrame:
    """Predicted label and one probability column per class, in input row order."""
    loaded = load_run(run_dir)
    inputs = _inputs(loaded, data, require_labels=False)
    logits, _ = loaded.model.predict_logits(_progress(inputs.loader, "predict"))
    proba = torch.softmax(logits, dim=-1).numpy()
    out = pd.DataFrame({"row": inputs.rows})
    out["prediction"] = loaded.label_map.decode(proba.argmax(1))
    for i, name in enumerate(loaded.label_map.classes):
        out[f"proba_{name}"] = proba[:, i]
    if inputs.labels is not None:
        out["label"] = loaded.label_map.decode(inputs.labels)
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
        out["label"] = loaded.label_map.decode(inputs.labels)
    return out


def _progress(loader: DataLoader, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, unit="batch", leave=False)
