"""OOD detection plots: ROC and precision-recall curves, one curve per score, saved as PNG.

Scores follow :mod:`headstart.metrics.ood`'s convention (higher = more in-distribution). The ROC curve
plots the share of ID samples accepted as ID (TPR) against the share of OOD samples accepted as ID (FPR) as
the threshold falls; its area is the ``auroc`` of :func:`~headstart.metrics.ood.ood_metrics`, and the FPR
where the TPR first reaches 95% is its ``fpr95``. The PR figure has two panels: OOD as the positive class
(ranked by ``-score``; its average precision is ``aupr_out``) and ID as the positive class (``aupr_in``).
Legends show those values as :func:`~headstart.metrics.ood.ood_report` computes them.

Like :mod:`headstart.metrics.plots`, figures are built with :class:`matplotlib.figure.Figure` (no pyplot,
works headless) and files are written atomically, so an output folder never holds a half-written plot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from headstart.errors import DataError
from headstart.fileio import atomic_path
from headstart.metrics.ood import ood_report

__all__ = ["ood_pr_figure", "ood_roc_figure", "plot_ood", "pr_points", "roc_points"]

DPI = 120


def _threshold_counts(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct threshold, highest score first."""
    order = np.argsort(-score, kind="mergesort")
    s, y = score[order], positive[order].astype(np.float64)
    last_of_group = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tps = np.cumsum(y)[last_of_group]
    fps = (last_of_group + 1) - tps
    return tps, fps


def _pair(id_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    s_id = np.asarray(id_scores, dtype=np.float64).reshape(-1)
    s_ood = np.asarray(ood_scores, dtype=np.float64).reshape(-1)
    if s_id.size == 0 or s_ood.size == 0:
        raise DataError("OOD curves need at least one ID and one OOD score; one of the sets is empty.")
    if not (np.all(np.isfinite(s_id)) and np.all(np.isfinite(s_ood))):
        raise DataError("OOD curves need finite scores; NaN or infinite values came from the logits / features.")
    return s_id, s_ood


def roc_points(id_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) from (0, 0) to (1, 1): OOD and ID shares accepted as ID at each distinct threshold."""
    s_id, s_ood = _pair(id_scores, ood_scores)
    is_id = np.r_[np.ones(s_id.size), np.zeros(s_ood.size)]
    tps, fps = _threshold_counts(is_id, np.r_[s_id, s_ood])
    return np.r_[0.0, fps / s_ood.size], np.r_[0.0, tps / s_id.size]


def pr_points(id_scores: Any, ood_scores: Any, positive: str = "ood") -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of the ``positive`` class ("ood": ranked by ``-score``; "id": by ``score``), one
    point per distinct threshold, in increasing recall."""
    if positive not in ("ood", "id"):
        raise DataError(f"positive must be 'ood' or 'id', got {positive!r}.")
    s_id, s_ood = _pair(id_scores, ood_scores)
    score = np.r_[s_id, s_ood]
    is_id = np.r_[np.ones(s_id.size), np.zeros(s_ood.size)]
    label, rank = (1.0 - is_id, -score) if positive == "ood" else (is_id, score)
    tps, fps = _threshold_counts(label, rank)
    return tps / tps[-1], tps / (tps + fps)


def _check_sets(id_scores: Mapping[str, Any], ood_scores: Mapping[str, Any]) -> None:
    if not id_scores or set(id_scores) != set(ood_scores):
        raise DataError(
            f"OOD plots need the same, non-empty score names for both sets; got {sorted(id_scores)} (ID) and "
            f"{sorted(ood_scores)} (OOD)."
        )


def _title(n_id: int, n_ood: int, subtitle: str | None) -> str:
    return f"n_id={n_id}, n_ood={n_ood}" + (f"; {subtitle}" if subtitle else "")


def ood_roc_figure(id_scores: Mapping[str, Any], ood_scores: Mapping[str, Any], *, tpr: float = 0.95,
                   subtitle: str | None = None) -> Figure:
    """ROC curves (one per score), the chance diagonal, and each score's FPR at ``tpr`` marked."""
    _check_sets(id_scores, ood_scores)
    report = ood_report(id_scores, ood_scores, tpr)
    fig = Figure(figsize=(6.0, 5.2), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1.0, label="chance")
    for name in id_scores:
        fpr, tpr_curve = roc_points(id_scores[name], ood_scores[name])
        m = report[name]
        (line,) = ax.plot(fpr, tpr_curve, linewidth=1.6,
                          label=f"{name}  AUROC {m['auroc']:.3f}, FPR@{tpr:.0%} {m['fpr95']:.3f}")
        ax.plot([m["fpr95"]], [tpr], marker="o", markersize=4, color=line.get_color())
    ax.axhline(tpr, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("FPR: OOD accepted as ID")
    ax.set_ylabel("TPR: ID accepted as ID")
    n_id, n_ood = len(np.asarray(next(iter(id_scores.values())))), len(np.asarray(next(iter(ood_scores.values()))))
    ax.set_title(f"OOD detection ROC\n({_title(n_id, n_ood, subtitle)})", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def ood_pr_figure(id_scores: Mapping[str, Any], ood_scores: Mapping[str, Any], *,
                  subtitle: str | None = None) -> Figure:
    """Precision-recall curves (one per score): OOD as the positive class (left), ID as positive (right)."""
    _check_sets(id_scores, ood_scores)
    report = ood_report(id_scores, ood_scores)
    n_id, n_ood = len(np.asarray(next(iter(id_scores.values())))), len(np.asarray(next(iter(ood_scores.values()))))
    fig = Figure(figsize=(10.5, 4.8), layout="constrained")
    panels = (("ood", "aupr_out", "OOD positive", n_ood / (n_id + n_ood)),
              ("id", "aupr_in", "ID positive", n_id / (n_id + n_ood)))
    for i, (positive, key, title, base) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.axhline(base, color="0.7", linestyle=":", linewidth=1.0, label=f"chance ({base:.2f})")
        for name in id_scores:
            recall, precision = pr_points(id_scores[name], ood_scores[name], positive)
            ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre", linewidth=1.6,
                    label=f"{name}  AP {report[name][key]:.3f}")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{title} ({key})", fontsize=10)
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"OOD detection precision-recall ({_title(n_id, n_ood, subtitle)})", fontsize=10)
    return fig


def _save_atomic(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def plot_ood(id_scores: Mapping[str, Any], ood_scores: Mapping[str, Any], out_dir: str | os.PathLike[str], *,
             tpr: float = 0.95, subtitle: str | None = None) -> dict[str, Path]:
    """Write ``ood_roc.png`` and ``ood_pr.png`` into ``out_dir`` (atomically); returns {name: path}."""
    out = Path(out_dir)
    files = {"ood_roc.png": out / "ood_roc.png", "ood_pr.png": out / "ood_pr.png"}
    _save_atomic(ood_roc_figure(id_scores, ood_scores, tpr=tpr, subtitle=subtitle), files["ood_roc.png"])
    _save_atomic(ood_pr_figure(id_scores, ood_scores, subtitle=subtitle), files["ood_pr.png"])
    return files
