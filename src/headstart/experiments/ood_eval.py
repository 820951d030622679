"""Out-of-distribution detection with a finished classification run: ``headstart evaluate RUN --data ID --ood OOD``.

The path reads top to bottom (:func:`evaluate_ood`):

1. Refuse what is not a single-label classifier (regression, multi-task runs) before loading any weights, and
   check the output folder can be written.
2. Load the run's best weights (:func:`~headstart.experiments.inference.load_run`) and read the ID and OOD
   files with the run's modality, exactly as ``evaluate`` / ``predict`` read theirs. The OOD file's labels, if
   it has any, are never checked against the run's classes (an OOD set's classes are foreign by definition);
   the ID file's labels are optional and, when present, must be the run's classes.
3. One encoder pass per set (through the feature cache where the run uses it, as ``embed`` does); the head
   turns those features into the logits and into the representation its classifier layer reads
   (``head.embed``: the last hidden layer, or the encoder features when the head has none).
4. The Mahalanobis score's class means and tied covariance are fitted on that representation of the run's
   **training split**, re-read from the run's config with the split seed its summary.json records, and checked
   against the run (same number of training rows, same classes).
5. Scores (:func:`~headstart.metrics.ood.ood_scores`: MSP, max logit, energy at ``temperature``, Mahalanobis)
   and metrics (:func:`~headstart.metrics.ood.ood_report`: AUROC, AUPR with OOD / ID positive, FPR at 95% TPR)
   come from :mod:`headstart.metrics.ood`; nothing is recomputed here.
6. Written atomically into ``<run>/ood/`` (or ``out_dir``): ``ood.json``, ``ood.md``, ``scores.npz`` (every
   row's scores and ids) and ``plots/ood_roc.png`` / ``plots/ood_pr.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart.errors import ConfigError, DataError, HeadstartError, RunDirError
from headstart.experiments.rundir import require_run_dir
from headstart.fileio import atomic_path, atomic_write_text, write_json
from headstart.metrics.ood import MahalanobisScorer, energy_score, ood_report, ood_scores

__all__ = ["OOD_METRICS", "OOD_SCORES", "evaluate_ood", "format_ood_table"]

OOD_SCORES = ("msp", "max_logit", "energy", "mahalanobis")
OOD_METRICS = ("auroc", "aupr_out", "aupr_in", "fpr95")
TPR = 0.95
_HEAD_CHUNK = 8192  # rows per head call on precomputed features


def evaluate_ood(
    run_dir: str | Path,
    id_path: str | Path,
    ood_path: str | Path,
    *,
    temperature: float = 1.0,
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    ridge: float = 0.0,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Score an in-distribution file and an OOD file with a classification run; write and return the report.

    Returns what ``ood.json`` holds: ``metrics`` (``{score: {auroc, aupr_out, aupr_in, fpr95}}`` for msp,
    max_logit, energy and mahalanobis; higher score = more ID, ``aupr_out`` takes OOD as the positive class),
    ``n_id``, ``n_ood``, ``temperature``, ``mahalanobis`` (the features it used, their size, the training rows
    it was fitted on, the split seed, ``ridge``), ``id_accuracy`` (when the ID file has labels) and ``files``.
    ``batch_size`` overrides the run's data.eval_batch_size; ``ridge`` regularises the tied covariance (see
    :class:`~headstart.metrics.ood.MahalanobisScorer`; needed when the training split has fewer rows than the
    feature size); ``use_cache`` reads / writes the feature cache like ``embed`` does.
    """
    run = require_run_dir(run_dir)
    _refuse_non_classification(run)
    energy_score(np.zeros((1, 2)), temperature)  # a bad temperature fails now, not after the model ran
    scorer = MahalanobisScorer(ridge)  # likewise a bad ridge
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    out = Path(out_dir) if out_dir is not None else run / "ood"
    _require_writable(out, from_run=out_dir is None)

    from headstart.experiments.inference import load_run
    from headstart.modalities import get_modality

    loaded = load_run(run)
    _refuse_non_classification(run, loaded)
    if batch_size is not None:
        data = loaded.cfg.data.model_copy(update={"eval_batch_size": int(batch_size)})
        loaded = dataclasses.replace(loaded, cfg=loaded.cfg.model_copy(update={"data": data}))
    cfg, model = loaded.cfg, loaded.model
    modality = get_modality(cfg.task)
    model.eval()

    # ID and OOD files, read like the run's evaluate / predict data (errors name the file and the option).
    id_inputs = modality.read_inputs(loaded, id_path, False)
    try:
        ood_inputs = modality.read_inputs(dataclasses.replace(loaded, label_map=_LabelsIgnored(loaded.label_map)),
                                          ood_path, False)
    except HeadstartError as err:  # the readers name their option --data; this file came with --ood
        raise type(err)(str(err).replace("--data", "--ood")) from None

    # Mahalanobis: class means + tied covariance on the training split's representation.
    split_seed, train_rows, train_labels, train_loader = _training_split(loaded, modality)
    features_kind = "head_hidden" if any(isinstance(m, nn.Linear) for m in getattr(model.head, "layers", ())) \
        else "backbone"
    batch = cfg.data.eval_batch_size
    _, train_emb = _head_outputs(model, _encode(model, train_loader, cfg, batch, use_cache, "train split"))
    try:
        scorer.fit(train_emb, train_labels)
    except DataError as err:
        raise DataError(f"The Mahalanobis score cannot be fitted on the run's training split ({len(train_labels)} "
                        f"rows, {train_emb.shape[1]} features): {err} On the command line: --ridge 1e-3.") from None

    id_logits, id_emb = _head_outputs(model, _encode(model, id_inputs.loader, cfg, batch, use_cache, "ID"))
    ood_logits, ood_emb = _head_outputs(model, _encode(model, ood_inputs.loader, cfg, batch, use_cache, "OOD"))
    id_scores = ood_scores(id_logits, id_emb, scorer, temperature)
    ood_scores_ = ood_scores(ood_logits, ood_emb, scorer, temperature)
    metrics = ood_report(id_scores, ood_scores_, TPR)

    payload: dict[str, Any] = {
        "run_dir": str(run),
        "id_data": str(id_path),
        "ood_data": str(ood_path),
        "n_id": int(id_logits.shape[0]),
        "n_ood": int(ood_logits.shape[0]),
        "convention": "higher score = more in-distribution; aupr_out takes OOD as the positive class, aupr_in ID; "
                      f"fpr95 is the share of OOD rows accepted at the threshold accepting {TPR:.0%} of ID rows",
        "tpr": TPR,
        "temperature": float(temperature),
        "metrics": metrics,
        "mahalanobis": {
            "features": features_kind,
            "features_note": ("the head's last hidden layer (head.embed), the input of its classifier layer"
                              if features_kind == "head_hidden" else
                              "the encoder's pooled features, the input of the head's classifier layer"),
            "feature_dim": int(train_emb.shape[1]),
            "fitted_on": "train",
            "n_train": len(train_labels),
            "split_seed": split_seed,
            "n_classes": int(np.unique(train_labels).size),
            "ridge": scorer.ridge,
        },
        "id_accuracy": None if id_inputs.labels is None
        else float(np.mean(id_logits.argmax(1) == np.asarray(id_inputs.labels))),
    }
    payload["files"] = _write_outputs(out, payload, id_scores, ood_scores_, id_inputs, ood_inputs, train_rows,
                                      run_name=cfg.name)
    return payload


# ----------------------------------------------------------------------------------------------------
# checks


def _refuse_non_classification(run: Path, loaded: Any = None) -> None:
    """Single-label classification only: refuse regression and multi-task runs, saying why.

    Before loading (``loaded`` None) it reads the task from config.yaml and the target kind from labels.json
    without validating them (load_run reports unreadable files); after loading, the resolved values.
    """
    if loaded is None:
        task = _peek(run / "config.yaml", "task")
        kind = _peek(run / "labels.json", "kind")
    else:
        task, kind = loaded.cfg.task, getattr(loaded.label_map, "kind", "classification")
    predicts = str(task).rpartition("_")[2] if task is not None else "classification"  # <modality>_<predicts>
    if predicts not in ("classification", "auto") or kind not in (None, "classification"):
        what = f"targets of kind '{kind}' (labels.json)" if predicts in ("classification", "auto") else f"task '{task}'"
        raise ConfigError(
            f"OOD detection (--ood) needs a single-label classification run, but '{run}' has {what}. The scores "
            f"(maximum softmax probability, max logit, energy, Mahalanobis to the class means) are defined on one "
            f"softmax over classes; regression and multi-task runs have none. Give the run directory of a "
            f"<modality>_classification run."
        )
    if loaded is not None and not (hasattr(loaded.model.head, "embed") and hasattr(loaded.model.head, "classifier")):
        raise ConfigError(f"OOD detection needs a classification head with a classifier layer; the run '{run}' has "
                          f"a {type(loaded.model.head).__name__}.")


def _peek(path: Path, key: str) -> Any:
    """``key`` of a YAML / JSON mapping file, or None when it cannot be read (load_run will say why)."""
    try:
        import yaml

        payload = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
    except Exception:
        return None
    return payload.get(key) if isinstance(payload, dict) else None


def _require_writable(out: Path, from_run: bool) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        where = "inside the run directory " if from_run else ""
        raise RunDirError(
            f"Cannot write the OOD results {where}'{out}' (resolved to {out.resolve()}): {reason}. Choose a writable "
            f"folder: --out DIR on the command line (out_dir= in Python)."
        ) from None


class _LabelsIgnored:
    """The run's label map for reading an OOD file: its labels (if any) are foreign classes by definition, so
    ``encode`` maps every row to -1 (no class) instead of refusing unseen labels; the rest is the run's map."""

    def __init__(self, label_map: Any) -> None:
        self._map = label_map

    def encode(self, values: Any, where: str = "", rows: Any = None) -> np.ndarray:
        n = len(values) if hasattr(values, "__len__") else len(list(values))
        return np.full(n, -1, dtype=np.int64)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._map, name)


# ----------------------------------------------------------------------------------------------------
# features


def _training_split(loaded: Any, modality: Any) -> tuple[int, np.ndarray, np.ndarray, Any]:
    """(split seed, row ids, class indices, eval-mode loader) of the run's training split, checked against the
    run (its summary.json row count and labels.json classes)."""
    run, cfg = loaded.run_dir, loaded.cfg
    summary = _read_summary(run)
    split_seed = summary.get("split_seed")
    if split_seed is None:
        split_seed = cfg.trainer.seed if cfg.data.split_seed is None else cfg.data.split_seed
    try:
        splits = modality.load_splits(cfg, int(split_seed))
    except HeadstartError as err:
        raise type(err)(f"The Mahalanobis score is fitted on the run's training split, re-read from "
                        f"'{run / 'config.yaml'}' (split seed {split_seed}): {err}") from None
    rows = splits.train
    labels = np.asarray(modality.labels(rows), dtype=np.int64)
    n_run = summary.get("n_train")
    classes = [str(c) for c in getattr(splits.label_map, "classes", [])]
    if (n_run is not None and int(n_run) != len(labels)) or classes != [str(c) for c in loaded.label_map.classes]:
        raise DataError(
            f"The training split re-read from '{run / 'config.yaml'}' (split seed {split_seed}) is not the one the "
            f"run trained on: {len(labels)} rows with classes {classes[:10]} now, {n_run} rows with classes "
            f"{[str(c) for c in loaded.label_map.classes][:10]} in the run (summary.json, labels.json). The "
            f"training data changed since the fit (or the run is a stack fold trained on a subset); restore the "
            f"training file(s) named in config.yaml so the Mahalanobis score is fitted on the run's own rows."
        )
    # Any split name but "train" gives an evaluation loader: no shuffling, no augmentation, eval batch size.
    loader = modality.loaders(cfg, {"mahalanobis_train": rows}, loaded.model.backbone)["mahalanobis_train"]
    return int(split_seed), np.asarray(modality.row_ids(rows)), labels, loader


def _read_summary(run: Path) -> dict[str, Any]:
    try:
        payload = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _encode(model: Any, loader: Any, cfg: Any, batch_size: int, use_cache: bool, desc: str) -> np.ndarray:
    """Pooled encoder features of every row of ``loader``'s dataset (dataset order), as ``embed`` computes them."""
    from tqdm.auto import tqdm

    from headstart.cache import pooled_features

    def progress(it: Any) -> Any:
        return tqdm(it, desc=f"ood: {desc}", unit="batch", leave=False)

    return pooled_features(model, loader, cfg.cache, batch_size, use_cache=use_cache, progress=progress)


@torch.inference_mode()
def _head_outputs(model: Any, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, head.embed) of encoder features, in eval mode: what the classifier outputs and what it reads."""
    head = model.head
    param = next(head.parameters())
    head.eval()
    logits, embedded = [], []
    for start in range(0, len(features), _HEAD_CHUNK):
        x = torch.tensor(features[start:start + _HEAD_CHUNK], dtype=param.dtype, device=param.device)  # a copy: cache memmaps are read-only
        logits.append(head(x).float().cpu())
        embedded.append(head.embed(x).float().cpu())
    return torch.cat(logits).numpy().astype(np.float64), torch.cat(embedded).numpy().astype(np.float64)


# ----------------------------------------------------------------------------------------------------
# outputs


def format_ood_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table: one row per score, AUROC / AUPR-out / AUPR-in / FPR@95TPR."""
    lines = ["| score | AUROC | AUPR-out | AUPR-in | FPR@95TPR |", "|---|---:|---:|---:|---:|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m[k]) for k in OOD_METRICS) + " |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _markdown(payload: Mapping[str, Any], run_name: str) -> str:
    m = payload["mahalanobis"]
    feats = "the head's last hidden layer" if m["features"] == "head_hidden" else "the encoder's pooled features"
    acc = "" if payload["id_accuracy"] is None else f" ID accuracy {payload['id_accuracy']:.4f}."
    return (
        f"# OOD detection: {run_name}\n\n"
        f"ID: `{payload['id_data']}` ({payload['n_id']} rows); OOD: `{payload['ood_data']}` ({payload['n_ood']} "
        f"rows).{acc} Higher score = more in-distribution; AUPR-out takes OOD as the positive class, AUPR-in ID; "
        f"FPR@95TPR is the share of OOD rows accepted where {TPR:.0%} of ID rows are.\n\n"
        f"Energy at temperature {payload['temperature']:g}. Mahalanobis on {feats} ({m['feature_dim']} dims): "
        f"class means and tied covariance fitted on the {m['n_train']} training rows (split seed "
        f"{m['split_seed']}), ridge {m['ridge']:g}.\n\n"
        f"{format_ood_table(payload['metrics'])}\n"
    )


def _row_ids(rows: Any) -> np.ndarray:
    arr = np.asarray(rows)
    return arr.astype(str) if arr.dtype == object else arr  # readable with np.load(allow_pickle=False)


def _write_outputs(out: Path, payload: dict[str, Any], id_scores: Mapping[str, np.ndarray],
                   ood_scores_: Mapping[str, np.ndarray], id_inputs: Any, ood_inputs: Any, train_rows: np.ndarray,
                   run_name: str) -> dict[str, str]:
    from headstart.metrics.ood_plots import plot_ood

    arrays: dict[str, np.ndarray] = {"id_row": _row_ids(id_inputs.rows), "ood_row": _row_ids(ood_inputs.rows),
                                     "train_row": _row_ids(train_rows)}
    for name in id_scores:
        arrays[f"id_{name}"] = np.asarray(id_scores[name], dtype=np.float64)
        arrays[f"ood_{name}"] = np.asarray(ood_scores_[name], dtype=np.float64)
    if id_inputs.labels is not None:
        arrays["id_label"] = np.asarray(id_inputs.labels, dtype=np.int64)
    files = {"scores.npz": out / "scores.npz"}
    with atomic_path(files["scores.npz"]) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    subtitle = f"energy T={payload['temperature']:g}"
    for name, path in plot_ood(id_scores, ood_scores_, out / "plots", tpr=TPR, subtitle=subtitle).items():
        files[f"plots/{name}"] = path
    files["ood.md"] = out / "ood.md"
    files["ood.json"] = out / "ood.json"
    listed = {name: str(path) for name, path in files.items()}
    atomic_write_text(files["ood.md"], _markdown(payload, run_name))
    write_json(files["ood.json"], {**payload, "files": listed})
    return listed
