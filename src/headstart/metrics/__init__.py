"""Metrics: numpy classification metrics that match scikit-learn.

Plots live in :mod:`headstart.metrics.plots` and are not imported here, so computing metrics in the
training loop does not import matplotlib.
"""

from __future__ import annotations

from headstart.metrics.classification import (
    accuracy,
    classification_metrics,
    confusion_matrix,
    f1_macro,
    log_loss,
    mcc,
    precision_macro,
    recall_macro,
    roc_auc_binary,
)
from headstart.metrics.embedding import fisher_ratio

__all__ = [
    "accuracy",
    "classification_metrics",
    "confusion_matrix",
    "f1_macro",
    "fisher_ratio",
    "log_loss",
    "mcc",
    "precision_macro",
    "recall_macro",
    "roc_auc_binary",
]
