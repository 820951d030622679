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
from headstart.metrics.plots import plot_confusion, plot_curves


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
        train = {"epoch": e, "train_loss": 1.0 / (e + 1), "train_acc": 0.5 + 0.05 * e}
        if lr:
            train["lr"] = 1e-4 * min(1.0, (e + 1) / 3)
        rows.append(train)
        rows.append(
            {
                "epoch": e,
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


def test_plot_curves_three_panels_with_lr(tmp_path: Path, loud_warnings) -> None:
    path = tmp_path / "run" / "plots" / "curves.png"  # parent dirs do not exist yet
    plot_curves(_history(), path)
    image = _read_png(path)
    height, width = image.shape[:2]
    assert 300 <= height <= 1000 and 1200 <= width <= 2400 and width > 2.5 * height
    assert _no_temp_files(path.parent)
    assert not loud_warnings, [str(w.message) for w in loud_warnings]


def test_plot_curves_two_panels_without_lr(tmp_path: Path) -> None:
    with_lr, without_lr = tmp_path / "a.png", tmp_path / "b.png"
    plot_curves(_history(lr=True), with_lr)
    plot_curves(_history(lr=False), without_lr)
    assert _read_png(without_lr).shape[1] < _read_png(with_lr).shape[1]


def test_plot_curves_gives_the_fisher_ratio_its_own_panel(tmp_path: Path, monkeypatch) -> None:
    history = [{**row, "val_fisher": 1.5 + row["epoch"]} for row in _history(lr=True)]
    drawn: list[tuple[str, list[str]]] = []
    original = plots_mod._draw_panel
    monkeypatch.setattr(plots_mod, "_draw_panel",
                        lambda ax, h, keys, title: drawn.append((title, list(keys))) or original(ax, h, keys, title))
    plot_curves(history, tmp_path / "fisher.png")
    titles = [t for t, _ in drawn]
    assert titles[2].startswith("embeddings: Fisher ratio") and drawn[2][1] == ["val_fisher"]
    assert "val_fisher" not in drawn[1][1] and titles[3] == "learning rate"
    plot_curves(_history(lr=True), tmp_path / "plain.png")
    assert _read_png(tmp_path / "fisher.png").shape[1] > _read_png(tmp_path / "plain.png").shape[1]


def test_plot_curves_tolerates_missing_none_nan_and_single_epoch(tmp_path: Path, loud_warnings) -> None:
    history = [
        {"epoch": 0, "train_loss": 0.9, "val_loss": None, "val_acc": math.nan, "lr": math.nan},
        {"epoch": 0, "step": 17, "note": "text is ignored"},
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
