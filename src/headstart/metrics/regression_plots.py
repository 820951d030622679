"""The predicted-vs-true plot of a regression run (one panel per target)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from headstart.fileio import atomic_path

__all__ = ["plot_pred_vs_true"]


def plot_pred_vs_true(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str], path: str | os.PathLike[str],
                      *, split: str | None = None, best_epoch: int | None = None) -> None:
    """Scatter of predictions against targets with the y = x line, RMSE and R2 in each panel's title."""
    from headstart.metrics.regression import regression_metrics

    t = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    n = t.shape[1]
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 4.0 * rows))
    for j, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, j + 1)
        keep = ~np.isnan(t[:, j])
        yt, yp = t[keep, j], p[keep, j]
        ax.scatter(yt, yp, s=10, alpha=0.6, edgecolors="none")
        if keep.any():
            lo, hi = float(min(yt.min(), yp.min())), float(max(yt.max(), yp.max()))
            ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
            m = regression_metrics(yt, yp)
            ax.set_title(f"{name}: RMSE {m['rmse']:.3g}, R² {m['r2']:.3f} (n={len(yt)})", fontsize=9)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
    where = ", ".join(x for x in (f"{split} split" if split else "", f"best epoch {best_epoch}"
                                  if best_epoch is not None else "") if x)
    if where:
        fig.suptitle(f"Predicted vs true ({where})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
