"""Losses: cross-entropy (class weights, label smoothing) and focal loss."""

from __future__ import annotations

from headstart.losses.classification import (
    LOSSES,
    FocalLoss,
    build_loss,
    resolve_class_weights,
)

__all__ = ["LOSSES", "FocalLoss", "build_loss", "resolve_class_weights"]
