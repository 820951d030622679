"""`headstart stack`: no out-of-fold leakage by construction, meta-learners, the fold runs end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import ctrl_c_in_epoch_2_of, tiny_run_config
from headstart.data.splits import stratified_kfold
from headstart.errors import ConfigError, DataError, RunInterrupted
from headstart.experiments.meta import MetaLearner, cross_fit, evaluate_stack, meta_features
from headstart.experiments.stack import run_stack


def test_kfold_is_stratified_seeded_and_covers_every_row() -> None:
    y = np.array([0] * 23 + [1] * 11 + [2] * 6)
    folds = stratified_kfold(y, 5, seed=3)
    assert set(folds.tolist()) == set(range(5))
    assert np.array_equal(folds, stratified_kfold(y, 5, seed=3))
    assert not np.array_equal(folds, stratified_kfold(y, 5, seed=4))
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    for cls in range(3):
        per_fold = np.bincount(folds[y == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1


def test_oof_predictions_never_come_from_a_model_that_saw_the_row() -> None:
    """A memorising 'model': certain of the true label of every row it trained on, uniform elsewhere. Any
    out-of-fold prediction made by a model that saw its row would show up as a one-hot row."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=40)
    folds = stratified_kfold(y, 4, seed=0)
    n_test, calls = 7, []

    def memoriser(k: int, train_idx: np.ndarray, holdout_idx: np.ndarray):
        calls.append((k, set(train_idx.tolist()), set(holdout_idx.tolist())))
        seen = set(train_idx.tolist())

        def predict(rows):
            out = np.full((len(rows), 3), 1 / 3)
            for i, r in enumerate(rows):
                if r in seen:
                    out[i] = np.eye(3)[y[r]]
            return out

        return predict(holdout_idx), np.full((n_test, 3), k, dtype=float)

    oof, test = cross_fit(folds, memoriser)
    np.testing.assert_allclose(oof, 1 / 3)  # no row was predicted by a model that trained on it
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    for k, train, holdout in calls:
        assert not train & holdout and len(train | holdout) == 40
        assert holdout == set(np.flatnonzero(folds == k).tolist())
    np.testing.assert_allclose(test, 1.5)  # the mean over the 4 fold models


def test_cross_fit_rejects_a_fold_that_returns_the_wrong_rows() -> None:
    folds = np.array([0, 1, 0, 1])
    with pytest.raises(DataError, match="fold 0: 3 held-out predictions for 2 rows"):
        cross_fit(folds, lambda k, tr, ho: (np.ones((3, 2)) / 2, np.ones((1, 2)) / 2))


def test_meta_learners_learn_which_base_to_trust() -> None:
    rng = np.random.default_rng(1)
    n = 400
    y = rng.integers(0, 2, size=n)
    good = np.clip(np.eye(2)[y] * 0.8 + rng.random((n, 2)) * 0.2, 0, 1)
    good /= good.sum(1, keepdims=True)
    noise = rng.dirichlet([1, 1], size=n)  # an uninformative base
    x = meta_features([noise, good])
    assert x.shape == (n, 2)  # one column per base for two classes
    for kind in ("logreg", "lightgbm"):
        p = MetaLearner(kind, seed=0).fit(x[:300], y[:300]).predict_proba(x[300:], 2)
        assert (p.argmax(1) == y[300:]).mean() > 0.9, kind
    with pytest.raises(ConfigError, match="use one of lightgbm, logreg"):
        MetaLearner("xgboost")


def test_evaluate_stack_rows() -> None:
    rng = np.random.default_rng(2)
    y_tr, y_te = rng.integers(0, 3, 90), rng.integers(0, 3, 60)
    probas = [rng.dirichlet([1, 1, 1], size=n) for n in (90, 60, 90, 60)]
    out = evaluate_stack(["a", "b"], probas[0::2], probas[1::2], y_tr, y_te, 3, meta=("logreg",))
    assert [r["model"] for r in out["rows"]] == ["a", "b", "average", "stack (logreg)"]
    np.testing.assert_allclose(out["probas"]["average"], (probas[1] + probas[3]) / 2)


@pytest.fixture(scope="module")
def stacked(tmp_path_factory, tiny_hf_dir):
    tmp = tmp_path_factory.mktemp("stack")
    paths = []
    for name, strategy, lr in (("probe", "linear_probe", 5e-2), ("full", "full", 1e-2)):
        raw = tiny_run_config(tmp, tiny_hf_dir, name=name, strategy={"name": strategy})
        raw["optim"]["lr"] = lr
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        paths.append(path)
    result = run_stack(paths, output_dir=tmp / "stack", folds=2, meta="logreg", workers=0, verbose=False)
    return tmp, paths, result


def test_stack_end_to_end(stacked) -> None:
    tmp, _paths, result = stacked
    out = tmp / "stack"
    assert [r["model"] for r in result.rows] == ["probe", "full", "average", "stack (lightgbm)", "stack (logreg)"]
    folds = np.load(out / "folds.npz")
    assert len(folds["fold"]) == 48 and set(folds["fold"].tolist()) == {0, 1}
    for base in ("probe", "full"):
        for k in (0, 1):
            run = out / "runs" / base / f"fold{k}"
            summary = json.loads((run / "summary.json").read_text())
            holdout = np.load(run / "predictions" / "holdout.npz")
            assert summary["n_train"] == int((folds["fold"] != k).sum())
            np.testing.assert_array_equal(holdout["row"], folds["row"][folds["fold"] == k])
            np.testing.assert_array_equal(holdout["label"], folds["label"][folds["fold"] == k])
            record = json.loads((run / "fold.json").read_text())  # which rows this fold run trained on
            assert record["fold"] == k and record["train_rows"] == folds["row"][folds["fold"] != k].tolist()
            assert record["holdout_rows"] == holdout["row"].tolist() and "headstart stack" in record["note"]
        oof = np.load(out / "oof" / f"{base}.npz")
        assert oof["oof"].shape == (48, 2) and oof["test"].shape == (16, 2)
        np.testing.assert_allclose(oof["oof"].sum(1), 1.0, rtol=1e-5)
    report = (out / "stack.md").read_text()
    assert "| stack (logreg) |" in report and "best single base chosen on OOF" in report
    assert (out / "test_predictions.csv").read_text().startswith("row,label,pred_average")


def test_stack_rerun_reuses_fold_runs(stacked) -> None:
    tmp, paths, result = stacked
    stamps = {p: p.stat().st_mtime_ns for p in (tmp / "stack" / "runs").glob("*/*/summary.json")}
    again = run_stack(paths, output_dir=tmp / "stack", folds=2, meta="logreg", workers=0, verbose=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again.rows == result.rows


def test_stack_input_errors(stacked, tmp_path) -> None:
    _tmp, paths, _ = stacked
    with pytest.raises(ConfigError, match="at least two base configs"):
        run_stack(paths[:1], output_dir=tmp_path / "one", workers=0)
    other = yaml.safe_load(paths[1].read_text())
    other["data"]["train_subset"] = 30
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(ConfigError, match=r"reads other rows .*data.train_subset: None vs 30"):
        run_stack([paths[0], tmp_path / "other.yaml"], output_dir=tmp_path / "x", workers=0)
    with pytest.raises(DataError, match="fewer than --folds 40"):
        run_stack(paths, output_dir=tmp_path / "y", folds=40, workers=0)


def test_stack_with_frozen_embeddings_reuses_the_fold_runs(stacked) -> None:
    tmp, paths, _ = stacked
    stamps = {p: p.stat().st_mtime_ns for p in (tmp / "stack" / "runs").glob("*/*/summary.json")}
    result = run_stack(paths, output_dir=tmp / "stack", folds=2, meta="logreg", workers=0, verbose=False,
                       embeddings=True)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "pretrained encoder features of base 'probe' (16 columns per row)" in result.files["stack.md"].read_text()
    assert [r["model"] for r in result.rows][-2:] == ["stack (lightgbm)", "stack (logreg)"]


def test_ctrl_c_in_a_fold_run_stops_the_stack_and_the_rerun_resumes_it(stacked, tmp_path) -> None:
    _tmp, paths, result = stacked
    out = tmp_path / "stack"
    with ctrl_c_in_epoch_2_of("fold1"), pytest.raises(RunInterrupted) as stopped:
        run_stack(paths, output_dir=out, folds=2, meta="logreg", workers=0, verbose=False)
    assert stopped.value.exit_code == 130
    message = str(stopped.value)
    assert "1 of 4 fold runs are finished, 1 stopped mid-run" in message and "2 not started" in message
    assert not (out / ".headstart.lock").read_text()
    assert json.loads((out / "runs" / "probe" / "fold1" / "checkpoints" / "last.json").read_text())["epoch"] == 1

    again = run_stack(paths, output_dir=out, folds=2, meta="logreg", workers=0, verbose=False)
    assert json.loads((out / "runs" / "probe" / "fold1" / "summary.json").read_text())["resumed"] is True
    assert again.rows == result.rows  # the same numbers as the stack that was never stopped
