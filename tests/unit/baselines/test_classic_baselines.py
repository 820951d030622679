"""Classic baselines: each equals a direct scikit-learn / LightGBM run on the same rows, settings are chosen on
val, the script decides the TF-IDF analyser, and every modality names its baseline through the plug-in hook."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")

from conftest import tiny_image_config, write_quadrant_npz
from headstart.baselines import (
    BaselineResult,
    baseline_names,
    get_baseline,
    run_classic_baseline,
    verdict,
)
from headstart.baselines.text import char_script_share, text_analyzer
from headstart.config import load_config
from headstart.errors import ConfigError
from headstart.metrics import classification_metrics
from headstart.modalities import get_modality

ROOT = Path(__file__).resolve().parents[3]


def _noisy_text_csv(path: Path, n: int, seed: int) -> Path:
    """Two classes told apart by a few words, with 15% of labels flipped: no C gives a perfect score."""
    rng = random.Random(seed)
    good, bad, filler = ["great", "lovely", "fine"], ["awful", "poor", "broken"], ["item", "box", "day", "shop"]
    lines = ["text,label"]
    for i in range(n):
        y = i % 2
        words = [rng.choice(good if y else bad), *rng.sample(filler, 2)]
        rng.shuffle(words)
        label = y if rng.random() > 0.15 else 1 - y
        lines.append(f"{' '.join(words)},{'pos' if label else 'neg'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _text_cfg(tmp: Path, **trainer: Any) -> Any:
    data = {"train": str(_noisy_text_csv(tmp / "train.csv", 120, 1)), "val": str(_noisy_text_csv(tmp / "val.csv", 60, 2)),
            "test": str(_noisy_text_csv(tmp / "test.csv", 60, 3))}
    raw = {"output_dir": str(tmp / "run"), "data": data, "backbone": {"type": "hf", "name_or_path": "unused"},
           "trainer": {"seed": 0, **trainer}}
    return load_config(None, raw=raw)


def _events(path: Path, n_entities: int, seed: int, start: int = 0) -> Path:
    """Entities that buy more often and spend more when their label is 1; rows shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(start, start + n_entities):
        label = int(rng.random() < 0.5)
        n = int(rng.integers(2, 5)) + 4 * label
        for day in sorted(rng.choice(60, size=n, replace=False)):
            rows.append((f"c{e}", int(day), f"m{rng.integers(0, 4)}", round(float(rng.lognormal(label)), 3), label))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    path.write_text("client,day,mcc,amount,label\n" + "".join(",".join(map(str, r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_every_modality_names_a_registered_baseline() -> None:
    names = {get_modality(t).classic_baseline().name for t in ("text_classification", "image_classification",
                                                                "sequence_classification", "molecule_regression")}
    assert names == {"tfidf_logreg", "pixels_logreg", "rfm_lightgbm", "morgan_lightgbm"} == set(baseline_names())
    with pytest.raises(ConfigError, match="Did you mean one of 'tfidf_logreg'"):
        get_baseline("tfidf_logref")


def test_text_baseline_equals_a_direct_scikit_learn_run(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    cfg = _text_cfg(tmp_path)
    splits = get_modality(cfg.task).load_splits(cfg, 0)
    result = run_classic_baseline(cfg, splits)
    assert result.status == "done" and result.params["analyzer"] == "word"
    vectorizer = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, max_features=200_000)
    x_train = vectorizer.fit_transform(splits.train["text"])
    model = LogisticRegression(C=result.params["C"], max_iter=2000).fit(x_train, splits.train["label"])
    for split in ("val", "test"):
        frame = getattr(splits, split)
        proba = model.predict_proba(vectorizer.transform(frame["text"]))
        np.testing.assert_allclose(result.outputs[split], proba, rtol=0, atol=1e-12)
        assert result.metrics[split]["acc"] == float(np.mean(proba.argmax(1) == frame["label"].to_numpy()))
        assert result.metrics[split] == classification_metrics(frame["label"].to_numpy(), proba, 2)


def test_c_is_the_best_on_val_by_the_monitored_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import headstart.baselines.linear as linear

    # C=1e-6 is so weak that every row gets the prior: accuracy falls to chance; C=10 reads the words
    monkeypatch.setattr(linear, "C_GRID", (1e-6, 10.0))
    cfg = _text_cfg(tmp_path)
    result = run_classic_baseline(cfg, get_modality(cfg.task).load_splits(cfg, 0))
    by_c = result.params["val_acc_by_C"]
    assert result.params["chosen_on"] == "val_acc" and result.params["C"] == 10.0
    assert by_c["10"] > by_c["1e-06"] and by_c["10"] == pytest.approx(result.metrics["val"]["acc"], abs=1e-6)
    # monitoring val_loss (lower is better) chooses by log-loss instead
    cfg = _text_cfg(tmp_path / "loss", monitor="val_loss", monitor_mode="min")
    result = run_classic_baseline(cfg, get_modality(cfg.task).load_splits(cfg, 0))
    losses = result.params["val_loss_by_C"]
    assert result.params["C"] == float(min(losses, key=losses.get))


@pytest.mark.parametrize(("texts", "analyzer"), [
    (["这家酒店的服务非常好，房间也很干净。", "早餐一般，但是位置很方便"], "char"),
    (["このホテルはとても良かったです。", "部屋が狭い"], "char"),
    (["โรงแรมนี้ดีมาก", "ห้องสะอาด"], "char"),
    (["the room was clean and quiet", "breakfast was poor"], "word"),
    (["호텔 방이 아주 깨끗했어요", "아침 식사는 별로였어요"], "word"),  # Korean separates words with spaces
    (["Ok 这家酒店很好 great", "fine"], "char"),
])
def test_script_decides_word_or_character_ngrams(texts: list[str], analyzer: str) -> None:
    assert text_analyzer(texts) == analyzer
    assert 0.0 <= char_script_share(texts) <= 1.0


def test_chinese_text_gets_character_ngrams(tmp_path: Path) -> None:
    rows = ["text,label"] + [f"{'很好 非常满意' if i % 2 else '很差 不满意'}{i},{'pos' if i % 2 else 'neg'}"
                             for i in range(40)]
    (tmp_path / "zh.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    raw = {"output_dir": str(tmp_path / "run"), "data": {"train": str(tmp_path / "zh.csv"), "val_fraction": 0.25},
           "backbone": {"type": "hf", "name_or_path": "unused"}}
    cfg = load_config(None, raw=raw)
    result = run_classic_baseline(cfg, get_modality(cfg.task).load_splits(cfg, 0))
    assert result.params["analyzer"] == "char" and result.params["ngram_range"] == [1, 3]
    assert result.metrics["val"]["acc"] == 1.0


def test_image_baseline_equals_a_direct_scikit_learn_run(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    raw = tiny_image_config(tmp_path, data={"test": str(write_quadrant_npz(tmp_path / "t.npz", 40, 5, shift=40))})
    cfg = load_config(None, raw=raw)
    splits = get_modality(cfg.task).load_splits(cfg, 0)
    result = run_classic_baseline(cfg, splits)
    assert result.name == "pixels_logreg" and result.status == "done"

    def flat(arrays: Any) -> np.ndarray:
        return arrays.x.reshape(len(arrays.x), -1).astype(np.float32) / np.float32(255)

    model = LogisticRegression(C=result.params["C"], max_iter=2000).fit(flat(splits.train), splits.train.y)
    proba = model.predict_proba(flat(splits.test))
    np.testing.assert_allclose(result.outputs["test"], proba, rtol=0, atol=1e-12)
    assert result.metrics["test"]["acc"] == float(np.mean(proba.argmax(1) == splits.test.y))


def test_image_pairs_are_skipped_with_the_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(40, 1, 4, 4)).astype(np.uint8)
    np.savez(tmp_path / "pairs.npz", xa=x, xb=x[::-1], y=np.arange(40) % 2)
    raw = tiny_image_config(tmp_path, data={"train": str(tmp_path / "pairs.npz"), "augment": None})
    cfg = load_config(None, raw=raw)
    result = run_classic_baseline(cfg, get_modality(cfg.task).load_splits(cfg, 0))
    assert result.status == "skipped" and "image pairs have no classic baseline" in result.reason
    assert BaselineResult.from_dict(result.to_dict()).to_dict() == result.to_dict()


def test_verdict_says_plainly_who_wins() -> None:
    label = "TF-IDF + logistic regression"
    assert verdict(label, 0.895, {"full": 0.749, "linear_probe": 0.7}, "test_acc") == (
        "The classic baseline (TF-IDF + logistic regression) beats every fine-tuned strategy: 0.8950 vs 0.7490 "
        "test_acc (the best, full).")
    assert verdict(label, 0.6, {"full": 0.749, "linear_probe": 0.7}, "test_acc").startswith(
        "Every fine-tuned strategy beats the classic baseline (TF-IDF + logistic regression) on test_acc: 0.6000 vs "
        "0.7000 for the weakest, linear_probe")
    assert "beats 1 of 2 fine-tuned strategies (linear_probe) on test_acc but not the best, full" in verdict(
        label, 0.72, {"full": 0.749, "linear_probe": 0.7}, "test_acc")
    assert "beats every" in verdict(label, 0.5, {"full": 0.9}, "test_rmse")  # lower is better for RMSE
    assert "cannot be compared" in verdict(label, float("nan"), {"full": 0.9}, "test_acc")


def test_sequence_rfm_lightgbm_equals_a_direct_lightgbm_run(tmp_path: Path) -> None:
    lgb = pytest.importorskip("lightgbm")
    from headstart.baselines.boosting import lgb_params
    from headstart.baselines.sequence import RFM_LGB, event_set_features

    data = {"train": str(_events(tmp_path / "train.csv", 120, 0)), "val": str(_events(tmp_path / "val.csv", 40, 1, 500)),
            "test": str(_events(tmp_path / "test.csv", 40, 2, 900)),
            "events": {"id_column": "client", "time_column": "day", "categorical": ["mcc"],
                       "numeric": {"amount": "log1p"}}}
    raw = {"output_dir": str(tmp_path / "run"), "task": "sequence_classification", "data": data,
           "trainer": {"seed": 0, "monitor": "val_auc"}}
    cfg = load_config(None, raw=raw)
    splits = get_modality(cfg.task).load_splits(cfg, 0)
    result = run_classic_baseline(cfg, splits)
    assert result.name == "rfm_lightgbm" and result.status == "done", result.reason
    x = {k: event_set_features(getattr(splits, k), splits.encoders, result.params["cut"]) for k in ("train", "val", "test")}
    assert {"recency", "tenure", "frequency", "amount_sum", "mcc_distinct"} <= set(x["train"].columns)
    assert x["train"]["frequency"].sum() == int(np.sum(splits.train.lengths))
    # the amounts are in the data's units (the run's log1p undone), the days as read
    first = splits.train.subset([0])
    assert x["train"]["amount_sum"][0] == pytest.approx(float(np.expm1(first.columns["amount"].astype(float)).sum()))
    assert x["train"]["recency"][0] == result.params["cut"] - first.times.max()
    params = lgb_params("binary", 0, **RFM_LGB)
    booster = lgb.train(params, lgb.Dataset(x["train"], splits.train.labels), num_boost_round=2000,
                        valid_sets=[lgb.Dataset(x["val"], splits.val.labels, reference=lgb.Dataset(x["train"]))],
                        callbacks=[lgb.early_stopping(100, verbose=False)])
    p = booster.predict(x["test"], num_iteration=booster.best_iteration or None)
    np.testing.assert_allclose(result.outputs["test"][:, 1], p, rtol=0, atol=1e-12)
    assert result.metrics["test"]["auc"] == classification_metrics(splits.test.labels, np.stack([1 - p, p], 1), 2)["auc"]


def test_molecule_morgan_lightgbm_runs_regression_and_tasks(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm")
    pytest.importorskip("rdkit")
    pytest.importorskip("torch_geometric")
    data = {"train": str(ROOT / "examples" / "data" / "molecules.csv"), "label_column": "logp", "val_fraction": 0.2,
            "test_fraction": 0.2, "train_subset": 120, "molecules": {"split": "random"}}
    raw = {"output_dir": str(tmp_path / "run"), "task": "molecule_regression", "data": data,
           "backbone": {"type": "graph"}, "trainer": {"monitor": "val_rmse", "monitor_mode": "min"}}
    cfg = load_config(None, raw=raw)
    result = run_classic_baseline(cfg, get_modality(cfg.task).load_splits(cfg, 0))
    assert result.name == "morgan_lightgbm" and result.status == "done", result.reason
    assert result.outputs["test"].shape[1] == 1 and np.isfinite(result.metrics["test"]["rmse"])
    raw["task"], raw["data"]["label_column"] = "molecule_classification", "lipophilic"
    raw["trainer"] = {"monitor": "val_auc", "monitor_mode": "max"}
    cfg = load_config(None, raw=raw)
    result = run_classic_baseline(cfg, get_modality(cfg.task).load_splits(cfg, 0))
    proba = result.outputs["val"]
    assert proba.shape[1] == 2 and np.allclose(proba.sum(1), 1) and 0.5 < result.metrics["val"]["auc"] <= 1


def test_report_reads_the_classic_row_from_results_rows(tmp_path: Path) -> None:
    """write_compare_report takes the classic row from results.csv-like rows: beside the strategies, outside the
    paired tests, with the sentence; a skipped baseline says why instead of a number."""
    from headstart.experiments.report import write_compare_report

    accs = {"full": (0.70, 0.74), "linear_probe": (0.60, 0.62)}
    rows = [{"run": f"{s}_s{seed}", "strategy": s, "seed": seed, "status": "done", "test_acc": accs[s][seed]}
            for s in accs for seed in (0, 1)]
    classic = {"run": "classic_baseline", "strategy": "baseline:tfidf_logreg", "seed": "", "status": "done",
               "test_acc": "0.9", "note": "classic baseline: TF-IDF + logistic regression (C=1)"}
    write_compare_report([*rows, classic], tmp_path / "a", metric="test_acc")
    summary = (tmp_path / "a" / "summary.md").read_text()
    assert ("The classic baseline (TF-IDF + logistic regression) beats every fine-tuned strategy: 0.9000 vs 0.7200 "
            "test_acc (the best, full).") in summary
    assert "| baseline:tfidf_logreg (classic) | 1 | 0 | 0.9000 |" in summary
    assert "| baseline:tfidf_logreg |" not in summary.split("## Paired tests")[1]  # not paired with the seeds
    skipped = {**classic, "status": "skipped", "test_acc": "",
               "note": "classic baseline skipped: logistic regression on pixels needs the Python package 'sklearn'"}
    write_compare_report(rows, tmp_path / "b", metric="test_acc", classic=skipped)
    html = (tmp_path / "b" / "report.html").read_text()
    assert ("The classic baseline (TF-IDF + logistic regression) did not run: logistic regression on pixels needs "
            "the Python package &#x27;sklearn&#x27;") in html
