"""How the model's outputs meet the labels, by what a run predicts: classes, numbers or several binary tasks.

``FinetuneModule`` keeps one of these (from its ``target`` hyper-parameter) and asks it for the loss, the
labels the loss compares against (standardised numbers for regression), the outputs a user sees (class
probabilities, numbers in the data's unit, per-task probabilities) and the metrics. Nothing else in training
asks what kind of target it has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart.errors import ConfigError
from headstart.losses import MaskedBCE, MaskedRegressionLoss, build_loss
from headstart.metrics import classification_metrics, multitask_metrics, regression_metrics

__all__ = ["ClassTarget", "RegressionTarget", "TaskTarget", "make_target"]


class ClassTarget:
    """One softmax over ``n`` classes (cross-entropy / focal); labels are class indices."""

    kind = "classification"
    has_accuracy = True

    def __init__(self, n: int) -> None:
        if n < 2:
            raise ConfigError(f"n_classes must be at least 2 for classification, got {n}.")
        self.n = n

    def build_loss(self, loss_args: Mapping[str, Any], train_labels: Any) -> nn.Module:
        args = {k: v for k, v in loss_args.items() if k != "huber_delta"}
        return build_loss(n_classes=self.n, train_labels=train_labels, **args)

    def prepare(self, labels: torch.Tensor) -> torch.Tensor:
        return labels

    def correct(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(-1) == labels).sum().float()

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1)

    def metrics(self, labels: np.ndarray, outputs: np.ndarray, prefix: str = "") -> dict[str, float]:
        return classification_metrics(labels, outputs, self.n, prefix=prefix)

    def plot(self, plots: Path, split: str, labels: np.ndarray, outputs: np.ndarray, names: Sequence[str],
             best_epoch: int | None) -> str:
        """The confusion matrix of ``split``; returns the file name."""
        from headstart.metrics import confusion_matrix
        from headstart.metrics.plots import plot_confusion

        cm = confusion_matrix(labels, outputs.argmax(1), self.n)
        plot_confusion(cm, list(names), plots / "confusion.png", split=split, best_epoch=best_epoch)
        return "confusion.png"


class RegressionTarget:
    """Numbers, learnt standardised: the loss compares the outputs with ``(y - mean) / std`` and ``decode``
    maps outputs back to the data's unit. Missing targets (NaN) are masked."""

    kind = "regression"
    has_accuracy = False

    def __init__(self, names: Sequence[str], mean: Sequence[float], std: Sequence[float]) -> None:
        self.names = list(names)
        self.n = len(self.names)
        self.mean = torch.tensor([float(v) for v in mean], dtype=torch.float32)
        self.std = torch.tensor([float(v) for v in std], dtype=torch.float32)

    def build_loss(self, loss_args: Mapping[str, Any], train_labels: Any) -> nn.Module:
        name = loss_args["name"]
        if name not in ("mse", "huber"):
            raise ConfigError(f"loss.type {name!r} is a classification loss; a regression run takes mse or huber.")
        return MaskedRegressionLoss(name, float(loss_args.get("huber_delta", 1.0)))

    def prepare(self, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.float().reshape(len(labels), -1)
        return (labels - self.mean.to(labels.device)) / self.std.to(labels.device)

    def correct(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        return None

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        out = logits.float()
        return out * self.std.to(out.device) + self.mean.to(out.device)

    def metrics(self, labels: np.ndarray, outputs: np.ndarray, prefix: str = "") -> dict[str, float]:
        return regression_metrics(labels, outputs, self.names, prefix=prefix)

    def plot(self, plots: Path, split: str, labels: np.ndarray, outputs: np.ndarray, names: Sequence[str],
             best_epoch: int | None) -> str:
        """Predicted against true values of ``split``, one panel per target."""
        from headstart.metrics.regression_plots import plot_pred_vs_true

        plot_pred_vs_true(labels, outputs, self.names, plots / "pred_vs_true.png", split=split, best_epoch=best_epoch)
        return "pred_vs_true.png"


class TaskTarget:
    """Several binary tasks, one sigmoid each; labels are ``[N, T]`` floats with NaN for missing ones."""

    kind = "multitask"
    has_accuracy = False

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.n = len(self.names)

    def build_loss(self, loss_args: Mapping[str, Any], train_labels: Any) -> nn.Module:
        if loss_args["name"] != "ce":
            raise ConfigError(f"loss.type {loss_args['name']!r}: several binary tasks train on ce (binary "
                              f"cross-entropy per task).")
        spec = loss_args.get("class_weights")
        if spec is None:
            return MaskedBCE()
        if isinstance(spec, str):
            if train_labels is None:
                raise ConfigError("class_weights 'balanced' needs the training labels (pass train_labels).")
            y = np.asarray(train_labels, dtype=np.float64).reshape(len(train_labels), -1)
            pos, neg = np.nansum(y, axis=0), np.sum(y == 0, axis=0)
            return MaskedBCE(torch.tensor(neg / np.maximum(pos, 1), dtype=torch.float32))
        weights = torch.as_tensor(spec, dtype=torch.float32).flatten()
        if weights.numel() != self.n:
            raise ConfigError(f"loss.class_weights has {weights.numel()} values; with {self.n} tasks give one "
                              f"positive-class weight per task.")
        return MaskedBCE(weights)

    def prepare(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.float().reshape(len(labels), -1)

    def correct(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        return None

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def metrics(self, labels: np.ndarray, outputs: np.ndarray, prefix: str = "") -> dict[str, float]:
        return multitask_metrics(labels, outputs, self.names, prefix=prefix)

    def plot(self, plots: Path, split: str, labels: np.ndarray, outputs: np.ndarray, names: Sequence[str],
             best_epoch: int | None) -> str | None:
        """No per-run plot yet for several tasks (the per-task AUCs are in summary.json)."""
        return None


def make_target(spec: Mapping[str, Any] | None, n_classes: int) -> ClassTarget | RegressionTarget | TaskTarget:
    """The target of a ``target`` hyper-parameter (None: classification over ``n_classes``)."""
    if spec is None or spec.get("kind", "classification") == "classification":
        return ClassTarget(int(n_classes))
    names = list(spec.get("names") or [str(i) for i in range(n_classes)])
    if len(names) != n_classes:
        raise ConfigError(f"the target names {names} do not match the {n_classes} outputs of the head")
    if spec["kind"] == "regression":
        return RegressionTarget(names, spec.get("mean") or [0.0] * n_classes, spec.get("std") or [1.0] * n_classes)
    if spec["kind"] == "multitask":
        return TaskTarget(names)
    raise ConfigError(f"unknown target kind {spec['kind']!r}; expected classification, regression or multitask")
