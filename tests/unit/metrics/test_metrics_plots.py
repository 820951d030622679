"""Plots: PNGs that matplotlib reads back, written atomically, quietly, for 2..50 classes."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from headstart.errors import DataError
from headstart.metrics import confusion_matrix
from headstart.metrics import plots as plots_mod
from headstart.metrics.plots import confusion_figure, curves_figure, plot_confusion, plot_curves


def _read_png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.std() > 0  # something was drawn
    return image


def _history(epochs: int = 6, lr: bool = True) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    for e in range(epochs):
        train = {"epoch": e + 1, "train_loss": 1.0 / (e + 1), "train_acc": 0.5 + 0.05 * e}
        if lr:
            train["lr"] = 1e-4 * min(1.0, (e + 1) / 3)
        rows.append(train)
        rows.append(
            {
                "epoch": e + 1,
                "val_loss": 1.1 / (e + 1),
                "val_acc": 0.5 + 0.04 * e,
                "val_f1": math.nan if e == 2 else 0.45 + 0.04 * e,
                "val_auc": 0.6 + 0.03 * e,
            }
        )
    return rows


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def loud_warnings():
    """Record every warning (pyproject ignores UserWarning globally; here we want to see them)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


# ----------------------------------------------------------------------------------------------------
# plot_curves


def test_plot_curves_panels_with_lr(tmp_path: Path, loud_warnings) -> None:
    path = tmp_path / "run" / "plots" / "curves.png"  # parent dirs do not exist yet
    plot_curves(_history(), path)
    image = _read_png(path)
    height, width = image.shape[:2]
    assert 500 <= height <= 1300 and 1000 <= width <= 2400 and width > height
    assert _no_temp_files(path.parent)
    assert not loud_warnings, [str(w.message) for w in loud_warnings]


def test_plot_curves_lr_panel_only_when_lr_is_logged(tmp_path: Path) -> None:
    with_lr, without_lr = tmp_path / "a.png", tmp_path / "b.png"
    plot_curves(_history(lr=True), with_lr)
    plot_curves(_history(lr=False), without_lr)
    assert _read_png(without_lr).shape[0] < _read_png(with_lr).shape[0]  # the LR row is gone
    assert [ax.get_gid() for ax in curves_figure(_history(lr=False)).axes] == ["epochs"] * 3
    assert [ax.get_gid() for ax in curves_figure(_history(lr=True)).axes][-1] == "lr"


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_gid() in ("epochs", "lr")]


def _legend(ax) -> list[str]:
    return [label for label in ax.get_legend_handles_labels()[1] if not label.startswith("best epoch")]


def test_plot_curves_gives_the_fisher_ratio_its_own_panel(tmp_path: Path) -> None:
    history = [{**row, "val_fisher": 1.5 + row["epoch"]} for row in _history(lr=True)]
    fig = curves_figure(history)
    titles = _titles(fig)
    fisher = titles.index("embeddings: Fisher ratio (between / within)")
    assert _legend(fig.axes[fisher]) == ["val_fisher"]
    assert all("val_fisher" not in _legend(ax) for i, ax in enumerate(fig.axes) if i != fisher)
    assert titles[-1] == "learning rate (per epoch)"
    plot_curves(history, tmp_path / "fisher.png")
    _read_png(tmp_path / "fisher.png")


def test_plot_curves_splits_metric_families() -> None:
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_acc": 0.5 + 0.1 * e, "val_loss": 1.2 / e, "val_acc": 0.6,
         "val_f1": 0.5, "val_f1_pos": 0.4, "val_precision": 0.5, "val_recall": 0.6, "val_mcc": 0.2,
         "val_auc": 0.7, "val_fisher": 2.0 * e, "val_ece": 0.1}
        for e in (1, 2, 3)
    ]
    fig = curves_figure(history)
    panels = {ax.get_title(): _legend(ax) for ax in fig.axes if ax.get_gid() == "epochs"}
    assert panels == {
        "loss": ["train_loss", "val_loss"],
        "accuracy / F1": ["train_acc", "val_acc", "val_f1", "val_f1_pos"],
        "precision / recall": ["val_precision", "val_recall"],
        "ranking / correlation (AUC, MCC)": ["val_auc", "val_mcc"],
        "other metrics": ["val_ece"],
        "embeddings: Fisher ratio (between / within)": ["val_fisher"],
    }
    assert max(len(keys) for keys in panels.values()) <= 4
    # A multi-class run has no AUC: the panel says what it holds.
    multi = [{k: v for k, v in row.items() if k != "val_auc"} for row in history]
    assert "ranking / correlation (MCC)" in _titles(curves_figure(multi))


def _visible_ticks(ax) -> list[float]:
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


def test_plot_curves_single_epoch_axis_and_best_epoch(tmp_path: Path, loud_warnings) -> None:
    history = [{"epoch": 1, "train_loss": 0.7, "train_acc": 0.6, "val_loss": 0.65, "val_acc": 0.7,
                "lr_head": 1e-3, "lr_encoder_max": 1e-4}]
    fig = curves_figure(history, best_epoch=1, monitor="val_acc")
    epoch_axes = [ax for ax in fig.axes if ax.get_gid() == "epochs"]
    assert epoch_axes
    for ax in epoch_axes:
        assert ax.get_xlim() == (0.5, 1.5)  # not matplotlib's -0.04..0.04 around a lone point
        assert _visible_ticks(ax) == [1.0]
        assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == "best_epoch"] == [1]
    labels = [label for ax in epoch_axes for label in ax.get_legend_handles_labels()[1]]
    assert "best epoch 1 (val_acc=0.7)" in labels
    assert fig.get_suptitle().startswith("best epoch 1 (val_acc=0.7)")
    plot_curves(history, tmp_path / "one.png", best_epoch=1, monitor="val_acc")
    _read_png(tmp_path / "one.png")
    assert not loud_warnings, [str(w.message) for w in loud_warnings]


def test_plot_curves_integer_epoch_ticks_many_epochs() -> None:
    history = [{"epoch": e, "train_loss": 1 / e, "val_acc": 0.5 + 0.01 * e} for e in range(1, 13)]
    fig = curves_figure(history, best_epoch=7, monitor="val_acc")
    for ax in fig.axes:
        ticks = _visible_ticks(ax)
        assert ticks and all(float(t).is_integer() for t in ticks) and min(ticks) >= 1
    assert "val_acc=0.57" in fig.get_suptitle()


def _step_rows(epochs: int, per_epoch: int, margin: bool = False) -> list[dict[str, float]]:
    rows = []
    for t in range(epochs * per_epoch):
        scale = (t + 1) / 3 if t < 3 else 0.5 * (1 + math.cos(math.pi * (t - 3) / (epochs * per_epoch - 3)))
        row = {"step": t + 1, "epoch": t // per_epoch + 1, "lr_head": 1e-3 * scale, "lr_encoder_max": 1e-4 * scale}
        if margin:
            row["lr_margin"] = 1e-2 * scale
        rows.append(row)
    return rows


def test_plot_curves_lr_per_optimizer_step(tmp_path: Path, loud_warnings) -> None:
    steps = _step_rows(epochs=6, per_epoch=5, margin=True)
    fig = curves_figure(_history(), best_epoch=3, monitor="val_acc", step_rows=steps)
    lr_ax = next(ax for ax in fig.axes if ax.get_gid() == "lr")
    curves = {line.get_label(): line for line in lr_ax.get_lines() if line.get_gid() != "best_epoch"}
    assert set(curves) == {"lr_head", "lr_encoder_max", "lr_margin"}
    head = curves["lr_head"]
    assert len(head.get_xdata()) == len(steps)  # one point per optimizer step
    np.testing.assert_allclose(head.get_ydata(), [r["lr_head"] for r in steps])
    # x is epochs completed: the 5th step of epoch 1 ends it (x = 1), the last ends epoch 6.
    np.testing.assert_allclose(head.get_xdata()[[0, 4, -1]], [0.2, 1.0, 6.0])
    assert all(float(t).is_integer() for t in _visible_ticks(lr_ax))
    assert [line.get_xdata()[0] for line in lr_ax.get_lines() if line.get_gid() == "best_epoch"] == [3]
    assert "per optimizer step" in lr_ax.get_title()
    # Rows out of order or repeated (a resumed file) still give one point per step, sorted.
    shuffled = list(reversed(steps)) + steps[:3]
    again = next(ax for ax in curves_figure(_history(), step_rows=shuffled).axes if ax.get_gid() == "lr")
    np.testing.assert_allclose(again.get_lines()[0].get_xdata(), head.get_xdata())
    plot_curves(_history(), tmp_path / "steps.png", best_epoch=3, monitor="val_acc", step_rows=steps)
    _read_png(tmp_path / "steps.png")
    assert not loud_warnings, [str(w.message) for w in loud_warnings]


def test_plot_curves_step_rows_without_epoch_use_steps_and_empty_falls_back() -> None:
    steps = [{"step": s, "lr_head": 1e-3} for s in range(1, 11)]
    lr_ax = next(ax for ax in curves_figure(_history(), step_rows=steps).axes if ax.get_gid() == "lr")
    assert lr_ax.get_xlabel() == "optimizer step"
    np.testing.assert_allclose(lr_ax.get_lines()[0].get_xdata(), range(1, 11))
    fallback = next(ax for ax in curves_figure(_history(), step_rows=[]).axes if ax.get_gid() == "lr")
    assert fallback.get_title() == "learning rate (per epoch)"
    with pytest.raises(DataError, match="step_rows row 0 is a int"):
        curves_figure(_history(), step_rows=[3])  # type: ignore[list-item]


def test_plot_curves_tolerates_missing_none_nan_and_single_epoch(tmp_path: Path, loud_warnings) -> None:
    history = [
        {"epoch": 1, "train_loss": 0.9, "val_loss": None, "val_acc": math.nan, "lr": math.nan},
        {"epoch": 1, "step": 17, "note": "text is ignored"},
    ]
    path = tmp_path / "single.png"
    plot_curves(history, str(path))  # str paths work too
    _read_png(path)
    plot_curves([{"epoch": 0}], tmp_path / "empty_panels.png")  # nothing to draw: still a valid PNG
    _read_png(tmp_path / "empty_panels.png")
    assert not loud_warnings, [str(w.message) for w in loud_warnings]


def test_plot_curves_picks_up_extra_keys_by_name() -> None:
    losses, metrics, lrs = plots_mod._panel_keys(
        [{"epoch": 0, "val_mcc": 0.1, "train_loss_epoch": 1.0, "lr-AdamW": 1e-3, "step": 3, "val_loss": 1.0}]
    )
    assert losses == ["val_loss", "train_loss_epoch"]
    assert metrics == ["val_mcc"]
    assert lrs == ["lr-AdamW"]


def test_plot_curves_overwrites_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    plot_curves(_history(), path)
    _read_png(path)
    assert _no_temp_files(tmp_path)


def test_plot_curves_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="history is empty"):
        plot_curves([], tmp_path / "x.png")
    with pytest.raises(DataError, match="row 1 is a int"):
        plot_curves([{"epoch": 0}, 3], tmp_path / "x.png")  # type: ignore[list-item]
    with pytest.raises(DataError, match="train_loss='high', which is not a number"):
        plot_curves([{"epoch": 0, "train_loss": "high"}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_failed_save_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots_mod.Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_curves(_history(), tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# plot_confusion


def _cm(n_classes: int, seed: int = 0, n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, n_classes, n))
    return confusion_matrix(y_true, y_pred, n_classes)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("n_classes", [2, 5, 50])
def test_plot_confusion_sizes(tmp_path: Path, n_classes: int, normalize: bool, loud_warnings) -> None:
    path = tmp_path / "nested" / f"cm_{n_classes}.png"
    plot_confusion(_cm(n_classes), [f"class_{i}" for i in range(n_classes)], path, normalize=normalize)
    height, width = _read_png(path).shape[:2]
    assert 400 <= height <= 3500 and 400 <= width <= 3500
    if n_classes == 50:
        assert min(height, width) >= 1800  # room for 50 labelled rows
    assert _no_temp_files(path.parent)
    assert not loud_warnings, [str(w.message) for w in loud_warnings]


def test_plot_confusion_grows_with_class_count(tmp_path: Path) -> None:
    sizes = []
    for n in (2, 10, 30):
        path = tmp_path / f"cm{n}.png"
        plot_confusion(_cm(n), [str(i) for i in range(n)], path)
        sizes.append(_read_png(path).shape[0])
    assert sizes[0] < sizes[1] < sizes[2]


def test_plot_confusion_empty_rows_and_long_names(tmp_path: Path, loud_warnings) -> None:
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 7]])  # class 1 has no true rows: share must not be NaN
    names = ["short", "a class name that is much longer than the label area should hold", "x"]
    plot_confusion(cm, names, tmp_path / "cm.png")
    _read_png(tmp_path / "cm.png")
    plot_confusion(cm.astype(float) / 2, names, tmp_path / "float.png", normalize=False)
    _read_png(tmp_path / "float.png")
    assert not loud_warnings, [str(w.message) for w in loud_warnings]


def test_plot_confusion_cjk_names_are_quiet(tmp_path: Path, loud_warnings, capfd) -> None:
    names = ["猫", "狗", "鸟 bird", "ネコ", "고양이"]
    plot_confusion(_cm(5), names, tmp_path / "cjk.png")
    _read_png(tmp_path / "cjk.png")
    assert not loud_warnings, [str(w.message) for w in loud_warnings]
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_font_families_falls_back_only_when_needed() -> None:
    assert plots_mod._font_families(["plain ascii", "café"]) is None  # default font has these
    families = plots_mod._font_families(["猫"])
    if families is not None:  # a CJK-capable font is installed: it must really cover the name
        from matplotlib import font_manager

        entry = next(f for f in font_manager.fontManager.ttflist if f.name == families[-1])
        assert ord("猫") in plots_mod._charmap(entry.fname)
        assert "Last Resort" not in families[-1]


def test_font_families_uses_an_installed_fallback_font() -> None:
    # Circled letters are in STIX (shipped with matplotlib) but not in DejaVu Sans, the default font.
    char = "Ⓐ"
    families = plots_mod._font_families([f"{char} class"])
    if families is None:
        pytest.skip("default font already covers the test glyph, or no font does")
    assert families[-1] not in families[:-1]
    from matplotlib import font_manager

    entry = next(f for f in font_manager.fontManager.ttflist if f.name == families[-1])
    assert ord(char) in plots_mod._charmap(entry.fname)


def test_plot_confusion_title_names_split_and_epoch(tmp_path: Path) -> None:
    cm = np.array([[5, 1], [2, 7]])
    title = confusion_figure(cm, ["neg", "pos"], split="test", best_epoch=3).axes[0].get_title()
    assert "test split" in title and "best epoch 3" in title and "n=15" in title
    assert "split" not in confusion_figure(cm, ["neg", "pos"]).axes[0].get_title()
    plot_confusion(cm, ["neg", "pos"], tmp_path / "cm.png", split="val")
    _read_png(tmp_path / "cm.png")
    with pytest.raises(TypeError):
        plot_confusion(cm, ["neg", "pos"], tmp_path / "cm.png", True, "test")  # type: ignore[misc]


def test_plot_confusion_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="square"):
        plot_confusion(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(DataError, match="3 class name"):
        plot_confusion(np.eye(2, dtype=int), ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(DataError, match="non-negative"):
        plot_confusion(np.array([[1, -1], [0, 1]]), ["a", "b"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_names_without_any_font_fall_back_to_class_numbers(monkeypatch) -> None:
    from headstart.metrics import plots

    monkeypatch.setattr(plots, "_font_covering", lambda chars: None)
    assert plots._unrenderable(["书籍", "平板"])
    assert not plots._unrenderable(["neg", "pos"])
