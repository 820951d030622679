"""Run plots: training curves and the confusion matrix, saved as PNG.

Figures are built with :class:`matplotlib.figure.Figure` directly, not pyplot: no global figure registry,
no backend switch, nothing left open, and it works headless and from threads. Files are written
atomically (temporary file in the same directory, then ``os.replace``) so a run directory never holds a
half-written plot.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure

from headstart.errors import DataError
from headstart.fileio import atomic_path

__all__ = ["plot_confusion", "plot_curves"]

DPI = 120

_LOSS_KEYS = ("train_loss", "val_loss")
_METRIC_KEYS = ("train_acc", "val_acc", "val_f1", "val_auc")
_LR_KEY = "lr"

# Font families known to cover CJK, tried before any other installed font.
_CJK_FONT_HINTS = (
    "Noto Sans CJK",
    "Noto Serif CJK",
    "Source Han Sans",
    "Source Han Serif",
    "WenQuanYi",
    "Droid Sans Fallback",
    "Microsoft YaHei",
    "SimHei",
    "PingFang",
    "Hiragino",
    "Heiti",
    "Apple SD Gothic",
    "AppleGothic",
    "Malgun Gothic",
    "NanumGothic",
    "IPAGothic",
    "IPAexGothic",
    "TakaoGothic",
    "Yu Gothic",
    "MS Gothic",
    "Arial Unicode MS",
    "Unifont",
)
# Placeholder fonts cover every code point with boxes; picking one would hide nothing.
_PLACEHOLDER_FONTS = ("Last Resort",)


# ----------------------------------------------------------------------------------------------------
# helpers


@contextmanager
def _quiet_glyphs() -> Iterator[None]:
    """Silence matplotlib's 'Glyph ... missing from font(s)' warnings (missing glyphs draw as boxes)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        warnings.filterwarnings(
            "ignore", message=r"Matplotlib currently does not support", category=UserWarning
        )
        yield


def _save_atomic(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Save ``fig`` as PNG at ``path``: parent dirs created, temp file in the same dir, then os.replace."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _as_float(value: Any, key: str, row: int) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"plot_curves: history row {row} has {key}={value!r}, which is not a number. History rows map "
            f"metric names to floats (None or NaN for a missing value)."
        ) from None


@functools.lru_cache(maxsize=256)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except Exception:  # unreadable or unsupported font file: treat as covering nothing
        return frozenset()


def _font_covering(chars: frozenset[str]) -> str | None:
    """Name of an installed font that has a glyph for every char in ``chars``, CJK fonts first; or None."""
    codes = {ord(c) for c in chars}
    fonts = [f for f in font_manager.fontManager.ttflist if not any(p in f.name for p in _PLACEHOLDER_FONTS)]
    hinted = [f for f in fonts if any(h.lower() in f.name.lower() for h in _CJK_FONT_HINTS)]
    for entry in hinted + [f for f in fonts if f not in hinted]:
        if codes <= _charmap(str(entry.fname)):
            return str(entry.name)
    return None


def _font_families(texts: Sequence[str]) -> list[str] | None:
    """Font family list for ``texts`` when the default font lacks some of their glyphs, else None.

    The list is the default families followed by an installed font covering the missing chars;
    matplotlib falls back glyph by glyph along it, so Latin text keeps the default look.
    """
    extra = frozenset(c for text in texts for c in text if ord(c) > 127 and not c.isspace())
    if not extra:
        return None
    default = font_manager.findfont(font_manager.FontProperties(), fallback_to_default=True)
    missing = frozenset(c for c in extra if ord(c) not in _charmap(default))
    if not missing:
        return None
    covering = _font_covering(missing)
    if covering is None:
        return None
    return [*font_manager.FontProperties().get_family(), covering]


def _unrenderable(texts: Sequence[str]) -> bool:
    """True when some chars of ``texts`` have no glyph in any installed font (they would draw as boxes)."""
    extra = frozenset(c for text in texts for c in text if ord(c) > 127 and not c.isspace())
    if not extra:
        return False
    default = font_manager.findfont(font_manager.FontProperties(), fallback_to_default=True)
    missing = frozenset(c for c in extra if ord(c) not in _charmap(default))
    return bool(missing) and _font_covering(missing) is None


def _shorten(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------------------
# training curves


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i, row in enumerate(history):
        if key not in row:
            continue
        y = _as_float(row[key], key, i)
        x = _as_float(row.get("epoch", i), "epoch", i)
        if math.isfinite(x) and math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return np.asarray(xs), np.asarray(ys)


def _panel_keys(history: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """Split the logged keys into (losses, metrics, learning rates); known keys first, in a fixed order.

    Other keys join a panel by name: ``*loss*`` to losses, ``train_*``/``val_*``/``test_*`` to metrics,
    ``lr``/``lr-*``/``lr_*`` (LearningRateMonitor style) to learning rates; anything else is ignored.
    """
    seen: list[str] = []
    for row in history:
        seen.extend(k for k in row if isinstance(k, str) and k not in seen)
    losses = [k for k in _LOSS_KEYS if k in seen]
    metrics = [k for k in _METRIC_KEYS if k in seen]
    lrs = [k for k in seen if k == _LR_KEY or k.startswith(("lr-", "lr_"))]
    for k in seen:
        if k in losses or k in metrics or k in lrs:
            continue
        if "loss" in k:
            losses.append(k)
        elif k.startswith(("train_", "val_", "test_")):
            metrics.append(k)
    return losses, metrics, lrs


def _draw_panel(ax: Any, history: Sequence[Mapping[str, Any]], keys: Sequence[str], title: str) -> bool:
    drawn = False
    for key in keys:
        x, y = _series(history, key)
        if x.size == 0:
            continue
        style = "--" if key.startswith("train_") else "-"
        ax.plot(x, y, style, marker="o", markersize=3, linewidth=1.5, label=key)
        drawn = True
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    return drawn


def plot_curves(history: list[dict[str, float]], path: str | os.PathLike[str]) -> None:
    """Save training curves (losses, metrics, and the learning rate when logged) as one PNG.

    ``history`` has one row per logged step, each with ``epoch`` and any of ``train_loss``, ``val_loss``,
    ``train_acc``, ``val_acc``, ``val_f1``, ``val_auc``, ``lr``; missing, None and NaN values are skipped,
    so train and validation rows may be separate. A logged ``val_fisher`` gets its own panel.
    """
    if not isinstance(history, Sequence) or isinstance(history, str | bytes):
        raise DataError(f"plot_curves: history must be a list of dicts, got {type(history).__name__}.")
    if len(history) == 0:
        raise DataError(
            "plot_curves: history is empty, so there is nothing to plot. Train for at least one epoch "
            "(or skip the plot) before calling it."
        )
    for i, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise DataError(
                f"plot_curves: history row {i} is a {type(row).__name__}, expected a dict like "
                f"{{'epoch': 0, 'train_loss': 0.7}}."
            )

    loss_keys, metric_keys, lr_keys = _panel_keys(history)
    lr_keys = [k for k in lr_keys if _series(history, k)[0].size > 0]
    # The Fisher ratio is unbounded (often 1-10): on the accuracy axis it would flatten every [0, 1] curve.
    fisher_keys = [k for k in metric_keys if "fisher" in k and _series(history, k)[0].size > 0]
    metric_keys = [k for k in metric_keys if "fisher" not in k]
    n_panels = 2 + bool(fisher_keys) + bool(lr_keys)
    fig = Figure(figsize=(5.0 * n_panels, 4.0), layout="constrained")
    axes = list(fig.subplots(1, n_panels, squeeze=False)[0])
    _draw_panel(axes.pop(0), history, loss_keys, "loss")
    _draw_panel(axes.pop(0), history, metric_keys, "metrics")
    if fisher_keys:
        _draw_panel(axes.pop(0), history, fisher_keys, "embeddings: Fisher ratio (between / within)")
    if lr_keys:
        ax = axes.pop(0)
        _draw_panel(ax, history, lr_keys, "learning rate")
        lr = np.concatenate([_series(history, k)[1] for k in lr_keys])
        if (lr > 0).all() and lr.max() / lr.min() > 20:
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    with _quiet_glyphs():
        _save_atomic(fig, path)


# ----------------------------------------------------------------------------------------------------
# confusion matrix


def plot_confusion(
    cm: np.ndarray,
    class_names: list[str],
    path: str | os.PathLike[str],
    normalize: bool = True,
) -> None:
    """Save a confusion-matrix heatmap (rows = true, columns = predicted) as PNG.

    Cells show the count and, with ``normalize``, the share of the true class (the row) that went to each
    prediction; colours follow the share, so rare classes stay readable. Fonts shrink for many classes
    (up to ~50); a CJK-capable font is used for class names when one is installed.
    """
    mat = np.asarray(cm)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] == 0:
        raise DataError(
            f"plot_confusion: cm must be a square [C, C] matrix (rows = true, columns = predicted), "
            f"got shape {mat.shape}."
        )
    n = mat.shape[0]
    if not np.all(np.isfinite(mat)) or (mat < 0).any():
        raise DataError("plot_confusion: cm must hold finite, non-negative counts.")
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise DataError(
            f"plot_confusion: {len(names)} class name(s) for a {n}x{n} confusion matrix; pass one name per "
            f"class, in label-index order (the run's label map)."
        )

    counts = mat.astype(np.float64)
    row_sums = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
    colour = share if normalize else counts
    vmax = 1.0 if normalize else max(float(counts.max()), 1.0)

    # Size the grid first (about 0.36 in per cell, capped), then fonts from the cell size, then the margin
    # the (shortened) tick labels need, so 2 and 50 classes are both readable.
    short = [_shorten(name) for name in names]
    grid_in = float(np.clip(0.36 * n + 1.5, 2.5, 19.0))
    cell_pt = grid_in / n * 72.0
    annot_size = float(np.clip(cell_pt * 0.28, 3.0, 10.0))
    tick_size = float(np.clip(cell_pt * 0.45, 4.0, 10.0))
    label_in = max(len(name) for name in short) * tick_size * 0.6 / 72.0 + 0.8
    side = grid_in + label_in
    integral = bool(np.all(counts == np.round(counts)))

    fig = Figure(figsize=(side + 1.4, side + 0.4), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(colour, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
    fig.colorbar(
        image, ax=ax, fraction=0.046, pad=0.02, label="share of true class" if normalize else "count"
    )

    for i in range(n):
        for j in range(n):
            c = counts[i, j]
            if c == 0 and n > 15:  # many classes: leave empty cells blank, it reads faster
                continue
            count_text = f"{int(c)}" if integral else f"{c:.3g}"
            text = f"{count_text}\n{share[i, j]:.0%}" if normalize and c > 0 else count_text
            dark = colour[i, j] / vmax > 0.55
            ax.text(
                j, i, text, ha="center", va="center", fontsize=annot_size,
                color="white" if dark else ("black" if c > 0 else "0.6"),
            )  # fmt: skip

    title_note = ""
    if _unrenderable(short):  # rows of boxes help nobody: number the classes as in labels.json instead
        short = [f"#{i}" for i in range(n)]
        title_note = "\n(classes numbered as in labels.json: no font has their glyphs)"
    families = _font_families(short)
    font_kw: dict[str, Any] = {"fontsize": tick_size}
    if families is not None:
        font_kw["fontfamily"] = families
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(short, rotation=45, ha="right", rotation_mode="anchor", **font_kw)
    ax.set_yticklabels(short, **font_kw)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(counts.sum()) if integral else float(counts.sum())
    ax.set_title(f"confusion matrix (n={total}){title_note}", fontsize=8 if title_note else None)
    with _quiet_glyphs():
        _save_atomic(fig, path)
