"""Losses: cross-entropy (class weights, label smoothing), focal loss, and masked regression / multi-task ones."""

from __future__ import annotations

from headstart.losses.classification import (
    LOSSES,
    FocalLoss,
    build_loss,
    resolve_class_weights,
)
from headstart.losses.masked import MaskedBCE, MaskedRegressionLoss

__all__ = ["LOSSES", "FocalLoss", "MaskedBCE", "MaskedRegressionLoss", "build_loss", "resolve_class_weights"]
