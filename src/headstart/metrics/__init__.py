"""Metrics: numpy classification, regression, multi-task and OOD metrics that match scikit-learn.

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
from headstart.metrics.ood import (
    MahalanobisScorer,
    energy_score,
    fpr_at_tpr,
    max_logit_score,
    msp_score,
    ood_metrics,
    ood_report,
    ood_scores,
)
from headstart.metrics.regression import average_precision, multitask_metrics, regression_metrics, spearman

__all__ = [
    "MahalanobisScorer",
    "accuracy",
    "average_precision",
    "classification_metrics",
    "confusion_matrix",
    "energy_score",
    "f1_macro",
    "fisher_ratio",
    "fpr_at_tpr",
    "log_loss",
    "max_logit_score",
    "mcc",
    "msp_score",
    "multitask_metrics",
    "ood_metrics",
    "ood_report",
    "ood_scores",
    "precision_macro",
    "recall_macro",
    "regression_metrics",
    "roc_auc_binary",
    "spearman",
]
