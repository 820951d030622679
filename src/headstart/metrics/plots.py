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
from matplotlib.ticker import MaxNLocator

from headstart.errors import DataError
from headstart.fileio import atomic_path

__all__ = ["confusion_figure", "curves_figure", "plot_confusion", "plot_curves"]

DPI = 120

_LOSS_KEYS = ("train_loss", "val_loss")
_METRIC_KEYS = ("train_acc", "val_acc", "val_f1", "val_auc")
_LR_KEY = "lr"
_STEP_LR_KEYS = ("lr_head", "lr_encoder_max", "lr_margin")
_FISHER_TITLE = "embeddings: Fisher ratio (between / within)"
# Bounded metric families, one panel each, matched by the name after train_/val_/test_.
_FAMILIES = (
    ("accuracy / F1", ("acc", "balanced_acc", "f1", "top")),
    ("precision / recall", ("precision", "recall", "sensitivity", "specificity")),
    ("ranking / correlation", ("auc", "roc", "ap", "average_precision", "pr_auc", "mcc", "kappa")),
)

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
        x = _as_float(row.get("epoch", i + 1), "epoch", i)  # epochs are 1-based, as in metrics.csv
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


def _family(key: str) -> str:
    """The panel of a (non-loss) metric: eight validation metrics on one axis read as spaghetti."""
    base = key.split("_", 1)[1] if key.startswith(("train_", "val_", "test_")) else key
    if "fisher" in base:
        return _FISHER_TITLE
    for title, prefixes in _FAMILIES:
        if base.startswith(prefixes):
            return title
    return "other metrics"


def _metric_panels(history: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(title, keys) per metric family that has data, in a fixed order; one empty 'metrics' panel if none."""
    order = [title for title, _ in _FAMILIES] + ["other metrics", _FISHER_TITLE]
    groups: dict[str, list[str]] = {}
    for key in keys:
        if _series(history, key)[0].size > 0:
            groups.setdefault(_family(key), []).append(key)
    panels = [(title, groups[title]) for title in order if title in groups]
    # Name what the ranking panel holds: "AUC, MCC" for a binary task, just "MCC" for a multi-class one.
    panels = [(_named(title, keys) if title == "ranking / correlation" else title, keys) for title, keys in panels]
    return panels or [("metrics", [])]


def _named(title: str, keys: Sequence[str]) -> str:
    bases = dict.fromkeys(k.split("_", 1)[1] if "_" in k else k for k in keys)
    return f"{title} ({', '.join(b.upper() for b in bases)})"


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
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    return drawn


def _epoch_range(history: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    epochs = [_as_float(row.get("epoch", i + 1), "epoch", i) for i, row in enumerate(history)]
    finite = [e for e in epochs if math.isfinite(e)]
    return (min(finite), max(finite)) if finite else (1.0, 1.0)


def _integer_epoch_axis(ax: Any, lo: float, hi: float, pad: float = 0.5) -> None:
    """Whole-number epoch ticks; half an epoch of room each side, so a 1-epoch run shows 0.5..1.5."""
    ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _step_lr(step_rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, bool, dict[str, np.ndarray]]:
    """(x, steps, x_is_epochs, {lr key: values}) from per-step rows, sorted by step, one point per step.

    With an ``epoch`` (1-based) in every row, x is the epochs completed after the step: the k-th of the n
    steps of epoch e sits at ``e - 1 + k / n``, so x = N is the end of epoch N, where the per-epoch panels
    put that epoch's point. Without it, x is the step.
    """
    by_step: dict[float, Mapping[str, Any]] = {}
    for i, row in enumerate(step_rows):
        if not isinstance(row, Mapping):
            raise DataError(
                f"plot_curves: step_rows row {i} is a {type(row).__name__}, expected a dict like "
                f"{{'step': 1, 'epoch': 1, 'lr_head': 1e-4, 'lr_encoder_max': 1e-5}}."
            )
        step = _as_float(row.get("step"), "step", i)
        if math.isfinite(step):
            by_step[step] = row
    steps = np.asarray(sorted(by_step))
    rows = [by_step[s] for s in steps]
    epochs = [_as_float(r.get("epoch"), "epoch", i) for i, r in enumerate(rows)]
    x_is_epochs = bool(rows) and all(math.isfinite(e) for e in epochs)
    if x_is_epochs:
        x = np.empty(len(rows))
        for e in sorted(set(epochs)):
            idx = [i for i, v in enumerate(epochs) if v == e]
            x[idx] = (e - 1) + np.arange(1, len(idx) + 1) / len(idx)
    else:
        x = steps.astype(float)
    keys = [k for k in _STEP_LR_KEYS if any(k in r for r in rows)]
    values = {k: np.asarray([_as_float(r.get(k), k, i) for i, r in enumerate(rows)]) for k in keys}
    return x, steps, x_is_epochs, {k: v for k, v in values.items() if np.isfinite(v).any()}


def _lr_yscale(ax: Any, values: Sequence[np.ndarray]) -> None:
    lr = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.empty(0)
    if lr.size and (lr > 0).all() and lr.max() / lr.min() > 20:
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


def _draw_step_lr(ax: Any, step_rows: Sequence[Mapping[str, Any]]) -> bool:
    """LR per optimizer step (warmup and decay visible), x in epochs with optimizer steps on top."""
    x, steps, x_is_epochs, values = _step_lr(step_rows)
    marker = "o" if x.size <= 60 else None
    styles = {"lr_head": "-", "lr_encoder_max": "--", "lr_margin": "-."}  # equal LRs stay distinguishable
    for key, y in values.items():
        ax.plot(x, y, styles.get(key, "-"), marker=marker, markersize=2.5, linewidth=1.3, label=key)
    ax.set_title(f"learning rate per optimizer step ({steps.size} steps)")
    ax.grid(True, alpha=0.3)
    if not values:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
        return False
    _lr_yscale(ax, list(values.values()))
    if not x_is_epochs:
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        return True
    start = float(np.floor(x[0] - 1e-9))
    ax.set_xlim(start, float(x[-1]))
    ax.margins(x=0.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch (x = N: end of epoch N)")
    # Optimizer steps along the top: a piecewise-linear map, exact at every recorded step.
    xs = np.concatenate([[start], x])
    ss = np.concatenate([[steps[0] - 1], steps]).astype(float)
    top = ax.secondary_xaxis(
        "top", functions=(lambda v: np.interp(v, xs, ss), lambda v: np.interp(v, ss, xs))
    )
    top.set_xlabel("optimizer step", fontsize=8, loc="right")  # the left corner holds the 1e-3 offset
    top.tick_params(labelsize=7)
    top.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    return True


def _best_label(history: Sequence[Mapping[str, Any]], best_epoch: int, monitor: str | None) -> str:
    if monitor is None:
        return f"best epoch {best_epoch}"
    x, y = _series(history, monitor)
    hit = y[x == best_epoch]
    return f"best epoch {best_epoch} ({monitor}={hit[-1]:.4g})" if hit.size else f"best epoch {best_epoch} ({monitor})"


def _check_history(history: Any) -> None:
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
                f"{{'epoch': 1, 'train_loss': 0.7}}."
            )


def curves_figure(
    history: Sequence[Mapping[str, Any]],
    *,
    best_epoch: int | None = None,
    monitor: str | None = None,
    step_rows: Sequence[Mapping[str, Any]] | None = None,
) -> Figure:
    """The figure :func:`plot_curves` saves, for callers (and tests) that inspect or restyle it.

    Panels (``Figure.axes`` order): loss; one per metric family with data (accuracy / F1, precision /
    recall, AUC / MCC, other metrics, the Fisher ratio); then the learning rate, full width along the
    bottom. Every panel but the LR one has ``gid == "epochs"``; the LR panel has ``gid == "lr"``; best-epoch
    lines have ``gid == "best_epoch"``.
    """
    _check_history(history)
    loss_keys, metric_keys, lr_keys = _panel_keys(history)
    panels = [("loss", loss_keys), *_metric_panels(history, metric_keys)]
    use_steps = bool(step_rows) and bool(_step_lr(step_rows)[3])  # type: ignore[arg-type]
    lr_keys = [k for k in lr_keys if _series(history, k)[0].size > 0]
    has_lr = use_steps or bool(lr_keys)

    n = len(panels)
    ncols = n if n <= 4 else math.ceil(n / 2)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.8 * ncols, 3.6 * nrows + (3.4 if has_lr else 0.0) + 0.4), layout="constrained")
    grid = fig.add_gridspec(nrows + has_lr, ncols, height_ratios=[1.0] * nrows + ([0.95] if has_lr else []))
    lo, hi = _epoch_range(history)
    label = _best_label(history, best_epoch, monitor) if best_epoch is not None else None
    monitor_panel = next((i for i, (_, keys) in enumerate(panels) if monitor in keys), 0)

    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        ax.set_gid("epochs")
        _draw_panel(ax, history, keys, title)
        _integer_epoch_axis(ax, lo, hi)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.3", linestyle=":", linewidth=1.3, zorder=0, gid="best_epoch",
                       label=label if i == monitor_panel else None)
            if i == monitor_panel and monitor is not None:
                x, y = _series(history, monitor)
                hit = y[x == best_epoch]
                if hit.size:
                    ax.plot([best_epoch], [hit[-1]], linestyle="none", marker="*", markersize=11,
                            color="goldenrod", markeredgecolor="black", markeredgewidth=0.5, zorder=5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best", framealpha=0.75)
        if title == _FISHER_TITLE:
            ax.title.set_fontsize(9)

    if has_lr:
        ax = fig.add_subplot(grid[nrows, :])
        ax.set_gid("lr")
        if use_steps:
            _draw_step_lr(ax, step_rows)  # type: ignore[arg-type]
            if best_epoch is not None and ax.get_xlabel().startswith("epoch"):
                ax.axvline(best_epoch, color="0.3", linestyle=":", linewidth=1.3, zorder=0, gid="best_epoch")
        else:
            _draw_panel(ax, history, lr_keys, "learning rate (per epoch)")
            _integer_epoch_axis(ax, lo, hi)
            _lr_yscale(ax, [_series(history, k)[1] for k in lr_keys])
            if best_epoch is not None:
                ax.axvline(best_epoch, color="0.3", linestyle=":", linewidth=1.3, zorder=0, gid="best_epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.3)
    if label is not None:
        fig.suptitle(f"{label}  (dotted line)", fontsize=10)
    return fig


def plot_curves(
    history: list[dict[str, float]],
    path: str | os.PathLike[str],
    *,
    best_epoch: int | None = None,
    monitor: str | None = None,
    step_rows: list[dict[str, float]] | None = None,
) -> None:
    """Save training curves (loss, metric families, Fisher ratio, learning rate) as one PNG.

    ``history`` has one row per epoch (metrics.csv rows), each with a 1-based ``epoch`` and any of
    ``train_loss``, ``val_loss``, ``train_acc``, ``val_*`` metrics, ``lr_*``; missing, None and NaN values
    are skipped, so train and validation rows may be separate. ``best_epoch`` (with ``monitor``, whose value
    is read from ``history``) draws a dotted line in every panel. ``step_rows`` (lr_steps.csv rows:
    ``step``, ``epoch``, ``lr_head``, ``lr_encoder_max``, ``lr_margin``) plot the LR of every optimizer
    step, so warmup and decay show; without them the per-epoch ``lr*`` columns are plotted.
    """
    fig = curves_figure(history, best_epoch=best_epoch, monitor=monitor, step_rows=step_rows)
    with _quiet_glyphs():
        _save_atomic(fig, path)


# ----------------------------------------------------------------------------------------------------
# confusion matrix


def plot_confusion(
    cm: np.ndarray,
    class_names: list[str],
    path: str | os.PathLike[str],
    normalize: bool = True,
    *,
    split: str | None = None,
    best_epoch: int | None = None,
) -> None:
    """Save a confusion-matrix heatmap (rows = true, columns = predicted) as PNG.

    Cells show the count and, with ``normalize``, the share of the true class (the row) that went to each
    prediction; colours follow the share, so rare classes stay readable. Fonts shrink for many classes
    (up to ~50); a CJK-capable font is used for class names when one is installed. ``split`` and
    ``best_epoch`` go into the title, so the PNG says which data and which weights it shows.
    """
    fig = confusion_figure(cm, class_names, normalize, split=split, best_epoch=best_epoch)
    with _quiet_glyphs():
        _save_atomic(fig, path)


def confusion_figure(
    cm: np.ndarray,
    class_names: list[str],
    normalize: bool = True,
    *,
    split: str | None = None,
    best_epoch: int | None = None,
) -> Figure:
    """The figure :func:`plot_confusion` saves (validated the same way), for callers that inspect it."""
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
    where = [f"{split} split" if split else "", f"best epoch {best_epoch}" if best_epoch is not None else ""]
    context = ", ".join(w for w in where if w)
    title = f"Confusion matrix\n({context}, n={total})" if context else f"Confusion matrix (n={total})"
    ax.set_title(f"{title}{title_note}", fontsize=8 if title_note else 10)
    return fig
