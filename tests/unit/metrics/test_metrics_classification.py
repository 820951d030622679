"""Reference tests: headstart's numpy metrics against scikit-learn on fixed random inputs."""

from __future__ import annotations

import numpy as np
import pytest

sk = pytest.importorskip("sklearn.metrics")

from headstart.errors import DataError, HeadstartError  # noqa: E402
from headstart.metrics import (  # noqa: E402
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

SEEDS = [0, 1, 2, 3, 4]


def _labels(seed: int, n_classes: int, n: int = 200, skill: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """y_true and a y_pred that is right ~skill of the time, otherwise uniform noise."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    noise = rng.integers(0, n_classes, n)
    y_pred = np.where(rng.random(n) < skill, y_true, noise)
    return y_true, y_pred


def _proba(seed: int, n_classes: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """y_true and softmax probabilities loosely correlated with it."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y_true] += 1.0
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    return y_true, proba / proba.sum(axis=1, keepdims=True)


def _sk_macro(fn, y_true, y_pred, n_classes):
    return fn(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0)


# ----------------------------------------------------------------------------------------------------
# label metrics vs sklearn


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("seed", SEEDS)
def test_label_metrics_match_sklearn(seed: int, n_classes: int) -> None:
    y_true, y_pred = _labels(seed, n_classes)
    assert accuracy(y_true, y_pred) == pytest.approx(sk.accuracy_score(y_true, y_pred), abs=1e-12)
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, n_classes),
        sk.confusion_matrix(y_true, y_pred, labels=list(range(n_classes))),
    )
    assert f1_macro(y_true, y_pred, n_classes) == pytest.approx(
        _sk_macro(sk.f1_score, y_true, y_pred, n_classes), abs=1e-12
    )
    assert precision_macro(y_true, y_pred, n_classes) == pytest.approx(
        _sk_macro(sk.precision_score, y_true, y_pred, n_classes), abs=1e-12
    )
    assert recall_macro(y_true, y_pred, n_classes) == pytest.approx(
        _sk_macro(sk.recall_score, y_true, y_pred, n_classes), abs=1e-12
    )
    assert mcc(y_true, y_pred, n_classes) == pytest.approx(sk.matthews_corrcoef(y_true, y_pred), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_macro_metrics_with_absent_classes_match_sklearn(seed: int) -> None:
    # 6 classes: y_true uses 0..3, y_pred also predicts 4 (never true), class 5 appears nowhere.
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 150)
    y_pred = np.where(rng.random(150) < 0.5, y_true, rng.integers(0, 5, 150))
    y_pred[:3] = 4
    for ours, theirs in [
        (f1_macro, sk.f1_score),
        (precision_macro, sk.precision_score),
        (recall_macro, sk.recall_score),
    ]:
        assert ours(y_true, y_pred, 6) == pytest.approx(_sk_macro(theirs, y_true, y_pred, 6), abs=1e-12)
    assert mcc(y_true, y_pred, 6) == pytest.approx(sk.matthews_corrcoef(y_true, y_pred), abs=1e-12)
    assert confusion_matrix(y_true, y_pred, 6).shape == (6, 6)


def test_absent_class_counts_as_zero_in_macro_average() -> None:
    # Classes 2 and 3 never occur: each adds a 0 to the mean, as sklearn does with labels=range(4).
    y_true, y_pred = [0, 1, 1], [0, 1, 0]
    assert f1_macro(y_true, y_pred, 4) == pytest.approx((2 / 3 + 2 / 3) / 4)
    assert precision_macro(y_true, y_pred, 4) == pytest.approx((0.5 + 1.0) / 4)
    assert recall_macro(y_true, y_pred, 4) == pytest.approx((1.0 + 0.5) / 4)


def test_mcc_degenerate_cases_match_sklearn() -> None:
    # Constant prediction: MCC undefined -> 0; perfect prediction -> 1; inverted binary -> -1.
    y = np.array([0, 1, 2, 1, 0, 2])
    assert mcc(y, np.zeros_like(y), 3) == sk.matthews_corrcoef(y, np.zeros_like(y)) == 0.0
    assert mcc(y, y, 3) == pytest.approx(1.0)
    yb = np.array([0, 1, 1, 0])
    assert mcc(yb, 1 - yb, 2) == pytest.approx(-1.0)


def test_confusion_matrix_layout_and_dtype() -> None:
    cm = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])  # rows true, columns predicted


def test_accepts_lists_bools_integral_floats_and_tensors() -> None:
    torch = pytest.importorskip("torch")
    y_true, y_pred = _labels(7, 3, n=50)
    expected = f1_macro(y_true, y_pred, 3)
    assert f1_macro(y_true.tolist(), y_pred.tolist(), 3) == pytest.approx(expected)
    assert f1_macro(y_true.astype(float), y_pred.astype(np.int32), 3) == pytest.approx(expected)
    assert f1_macro(torch.tensor(y_true), torch.tensor(y_pred), 3) == pytest.approx(expected)
    assert accuracy(np.array([True, False]), np.array([1, 0])) == 1.0


# ----------------------------------------------------------------------------------------------------
# ROC AUC


@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_matches_sklearn_with_ties(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    score = rng.normal(size=300) + 0.8 * y
    if decimals is not None:  # rounding creates many tied scores, across both classes
        score = np.round(score, decimals)
        assert np.unique(score).size < score.size
    assert roc_auc_binary(y, score) == pytest.approx(sk.roc_auc_score(y, score), abs=1e-12)


def test_roc_auc_edge_values() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc_binary(y, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc_binary(y, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc_binary(y, [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied: half credit
    assert roc_auc_binary(y, [0.1, 0.5, 0.5, 0.9]) == pytest.approx(sk.roc_auc_score(y, [0.1, 0.5, 0.5, 0.9]))
    assert roc_auc_binary(np.array([False, True]), np.array([[0.2], [0.7]])) == 1.0


def test_roc_auc_single_class_error_explains_fix() -> None:
    with pytest.raises(DataError) as info:
        roc_auc_binary(np.zeros(37, dtype=int), np.linspace(0, 1, 37))
    msg = str(info.value)
    assert "both classes" in msg and "evaluation split" in msg
    assert "37 row(s) of class 0" in msg and "0 row(s) of class 1" in msg
    assert "bigger" in msg and "stratified" in msg
    assert "\n" not in msg
    with pytest.raises(DataError, match="0 row\\(s\\) of class 0 and 5 row\\(s\\) of class 1"):
        roc_auc_binary(np.ones(5, dtype=int), np.arange(5.0))


def test_roc_auc_rejects_bad_inputs() -> None:
    with pytest.raises(DataError, match="labels 0 and 1 only"):
        roc_auc_binary([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="NaN or infinite"):
        roc_auc_binary([0, 1], [0.1, np.nan])
    with pytest.raises(DataError, match="3 rows but score has 2"):
        roc_auc_binary([0, 1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match="1-D"):
        roc_auc_binary([0, 1], np.ones((2, 2)))


# ----------------------------------------------------------------------------------------------------
# log loss


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("seed", SEEDS)
def test_log_loss_matches_sklearn(seed: int, n_classes: int) -> None:
    y_true, proba = _proba(seed, n_classes)
    expected = sk.log_loss(y_true, proba, labels=list(range(n_classes)))
    assert log_loss(y_true, proba) == pytest.approx(expected, rel=1e-12)


def test_log_loss_binary_1d_proba_is_positive_class() -> None:
    y = np.array([0, 1, 1, 0])
    p1 = np.array([0.2, 0.7, 0.9, 0.4])
    assert log_loss(y, p1) == pytest.approx(sk.log_loss(y, p1), rel=1e-12)
    assert log_loss(y, np.stack([1 - p1, p1], axis=1)) == pytest.approx(log_loss(y, p1))


def test_log_loss_clips_at_1e_15() -> None:
    y = np.array([0, 1])
    proba = np.array([[0.0, 1.0], [0.5, 0.5]])  # true class of row 0 has probability exactly 0
    expected = (-np.log(1e-15) - np.log(0.5)) / 2
    assert log_loss(y, proba) == pytest.approx(expected, rel=1e-12)
    assert log_loss([1], [[0.0, 1.0]]) == pytest.approx(-np.log(1 - 1e-15), rel=1e-9)


# ----------------------------------------------------------------------------------------------------
# classification_metrics


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_match_sklearn(seed: int, n_classes: int) -> None:
    y_true, proba = _proba(seed, n_classes)
    y_pred = proba.argmax(axis=1)
    labels = list(range(n_classes))
    got = classification_metrics(y_true, proba, n_classes)
    expected = {
        "acc": sk.accuracy_score(y_true, y_pred),
        "f1": _sk_macro(sk.f1_score, y_true, y_pred, n_classes),
        "precision": _sk_macro(sk.precision_score, y_true, y_pred, n_classes),
        "recall": _sk_macro(sk.recall_score, y_true, y_pred, n_classes),
        "mcc": sk.matthews_corrcoef(y_true, y_pred),
        "loss": sk.log_loss(y_true, proba, labels=labels),
    }
    if n_classes == 2:
        expected["auc"] = sk.roc_auc_score(y_true, proba[:, 1])
        expected["f1_pos"] = sk.f1_score(y_true, y_pred, pos_label=1, average="binary", zero_division=0)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
        assert isinstance(got[key], float)


def test_classification_metrics_prefix_and_auc_only_for_binary() -> None:
    y2, p2 = _proba(0, 2, n=40)
    assert sorted(classification_metrics(y2, p2, 2, prefix="val_")) == [
        "val_acc",
        "val_auc",
        "val_f1",
        "val_f1_pos",
        "val_loss",
        "val_mcc",
        "val_precision",
        "val_recall",
    ]
    y5, p5 = _proba(0, 5, n=40)
    assert "auc" not in classification_metrics(y5, p5, 5) and "f1_pos" not in classification_metrics(y5, p5, 5)
    assert not any(k.endswith("auc") for k in classification_metrics(y5, p5, 5, prefix="train_"))


def test_classification_metrics_accepts_torch_float16_proba() -> None:
    torch = pytest.importorskip("torch")
    y, p = _proba(3, 5, n=64)
    got = classification_metrics(torch.tensor(y), torch.tensor(p, dtype=torch.float16), 5)
    assert got["acc"] == pytest.approx(classification_metrics(y, p, 5)["acc"])
    assert got["loss"] == pytest.approx(classification_metrics(y, p, 5)["loss"], rel=1e-2)


def test_classification_metrics_single_class_binary_split_raises_auc_error() -> None:
    y = np.zeros(10, dtype=int)
    proba = np.tile([0.7, 0.3], (10, 1))
    with pytest.raises(DataError, match="both classes"):
        classification_metrics(y, proba, 2)


# ----------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("y_true", "proba", "n_classes", "match"),
    [
        ([0, 1, 2], np.full((3, 2), 0.5), 3, "proba has 2 columns but n_classes=3"),
        ([0, 1], np.full((3, 2), 0.5), 2, "proba has 3 rows but y_true has 2"),
        ([0, 1, 3], np.full((3, 3), 1 / 3), 3, r"label\(s\) \[3\] outside \[0, 3\)"),
        ([0, -1, 1], np.full((3, 2), 0.5), 2, r"label\(s\) \[-1\] outside"),
        ([], np.zeros((0, 2)), 2, "y_true is empty"),
        ([0, 1], np.array([[np.nan, 0.5], [0.5, 0.5]]), 2, "NaN or infinite values in 1 of 2 rows"),
        ([0, 1], np.array([[2.0, -1.0], [0.5, 0.5]]), 2, "not the logits"),
        ([0, 1], np.array([[0.2, 0.2], [0.5, 0.5]]), 2, "rows must sum to 1"),
        ([0, 1], np.array([0.5, 0.5]), 2, "2-D array"),
        ([0.5, 1.0], np.full((2, 2), 0.5), 2, "non-integer values"),
        (["a", "b"], np.full((2, 2), 0.5), 2, "integer class indices"),
        ([0, 1], np.full((2, 2), 0.5), 0, "n_classes must be a positive integer"),
        ([0, 1], np.full((2, 2), 0.5), 2.0, "n_classes must be a positive integer"),
        ([0, 1], np.full((2, 2), 0.5), True, "n_classes must be a positive integer"),
        ([[0, 1], [1, 0]], np.full((2, 2), 0.5), 2, "1-D array"),
    ],
)
def test_classification_metrics_rejects_bad_input(y_true, proba, n_classes, match) -> None:
    with pytest.raises(DataError, match=match):
        classification_metrics(y_true, proba, n_classes)


def test_label_metric_errors() -> None:
    with pytest.raises(DataError, match="y_true has 3 rows but y_pred has 2"):
        f1_macro([0, 1, 1], [0, 1], 2)
    with pytest.raises(DataError, match=r"y_pred has label\(s\) \[5\] outside \[0, 2\)"):
        confusion_matrix([0, 1], [0, 5], 2)
    with pytest.raises(DataError, match="y_pred is empty"):
        accuracy([0], [])
    with pytest.raises(DataError, match="proba rows must sum to 1"):
        log_loss([0, 1], [[0.9, 0.9], [0.5, 0.5]])
    with pytest.raises(DataError, match=r"label\(s\) \[2\] outside \[0, 2\)"):
        log_loss([0, 2], [[0.5, 0.5], [0.5, 0.5]])


def test_errors_are_headstart_value_errors() -> None:
    with pytest.raises(HeadstartError):
        mcc([0], [7], 2)
    with pytest.raises(ValueError):  # DataError is also a ValueError, for callers catching that
        precision_macro([0], [7], 2)
