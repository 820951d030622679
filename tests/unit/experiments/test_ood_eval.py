"""OOD detection from a finished run (``headstart evaluate RUN --data ID --ood OOD``) on the tiny BERT.

The runs are real ``run_fit`` runs of the 2-layer, 16-wide BERT on generated text (a few seconds each). The
checks recompute what :func:`evaluate_ood` reports through the public pieces it is built from: the run's own
logits (``predict_logits``), ``ood_metrics`` on the saved scores, and a ``MahalanobisScorer`` fitted on
``get_embeddings`` of the run's training loader.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_image_config, tiny_run_config, write_quadrant_npz
from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import ConfigError, DataError
from headstart.experiments.fit import run_fit
from headstart.experiments.inference import load_run
from headstart.experiments.ood_eval import OOD_METRICS, OOD_SCORES, evaluate_ood
from headstart.metrics.classification import roc_auc_binary
from headstart.metrics.ood import MahalanobisScorer, energy_score, max_logit_score, msp_score, ood_metrics
from headstart.metrics.ood_plots import plot_ood, pr_points, roc_points
from headstart.modalities import get_modality

OOD_TEXTS = [
    "3.14159 2.71828 1.41421 1.73205", "SELECT id FROM orders WHERE total > 100", "λ x . x x applied to itself",
    "lattice gauge theory on a torus", "import numpy as np", "0x7fff 0xdead 0xbeef 0xcafe",
    "Tuesday 14:05 platform 9", "H2O + CO2 -> H2CO3", "zebra quartz fjord nymph", "<div class='row'></div>",
    "sin cos tan arctan", "GATTACA CCGGTA ATTGC",
]


def _write_ood(path: Path, label_column: bool = True) -> Path:
    """Texts unlike the training reviews; their 'label' column holds classes the run never saw."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"] if label_column else ["text"])
        for i, text in enumerate(OOD_TEXTS):
            w.writerow([text, f"topic{i % 3}"] if label_column else [text])
    return path


def _fit(root: Path, model_dir: Path, **sections: dict) -> Path:
    cfg = load_config(None, raw=tiny_run_config(root, model_dir, **sections))
    return run_fit(cfg, verbose=False).run_dir


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory, tiny_hf_dir: Path) -> Path:
    """Head without hidden layers: its classifier reads the encoder's 16 pooled features."""
    return _fit(tmp_path_factory.mktemp("ood_plain"), tiny_hf_dir)


@pytest.fixture(scope="module")
def hidden_run(tmp_path_factory: pytest.TempPathFactory, tiny_hf_dir: Path) -> Path:
    """Head with one hidden layer of 8: its classifier reads head.embed."""
    return _fit(tmp_path_factory.mktemp("ood_hidden"), tiny_hf_dir, head={"hidden_dims": [8]},
                trainer={"epochs": 1})


def _data(run: Path, split: str) -> Path:
    return Path(yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["data"][split])


@pytest.fixture(scope="module")
def ood_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_ood(tmp_path_factory.mktemp("ood_data") / "ood.csv")


@pytest.fixture(scope="module")
def plain_report(plain_run: Path, ood_csv: Path) -> dict:
    """The default output folder (<run>/ood), energy at T=2 so the temperature is seen to matter."""
    return evaluate_ood(plain_run, _data(plain_run, "val"), ood_csv, temperature=2.0)


def _train_loader_embeddings(run: Path) -> tuple[torch.Tensor, np.ndarray, object]:
    """get_embeddings of the training loader fit builds (shuffled; the fit does not depend on row order)."""
    loaded = load_run(run)
    modality = get_modality(loaded.cfg.task)
    seed = json.loads((run / "summary.json").read_text())["split_seed"]
    splits = modality.load_splits(loaded.cfg, seed)
    loader = modality.loaders(loaded.cfg, {"train": splits.train}, loaded.model.backbone)["train"]
    features, labels = loaded.model.get_embeddings(loader)
    return features, labels.numpy(), loaded


# ---------------------------------------------------------------------------------------------------------
# the report


def test_every_score_has_every_metric_and_the_files_are_written(plain_run, plain_report) -> None:
    out = plain_run / "ood"
    assert list(plain_report["metrics"]) == list(OOD_SCORES)
    for name, m in plain_report["metrics"].items():
        assert list(m) == list(OOD_METRICS), name
        assert all(0.0 <= v <= 1.0 for v in m.values()), (name, m)
    assert plain_report["n_id"] == 16 and plain_report["n_ood"] == len(OOD_TEXTS)
    assert plain_report["temperature"] == 2.0
    assert 0.0 <= plain_report["id_accuracy"] <= 1.0  # the val file has labels
    for name in ("ood.json", "ood.md", "scores.npz", "plots/ood_roc.png", "plots/ood_pr.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert plain_report["files"][name] == str(out / name)
    for png in ("plots/ood_roc.png", "plots/ood_pr.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "ood.json").read_text(encoding="utf-8")) == json.loads(json.dumps(plain_report))
    md = (out / "ood.md").read_text(encoding="utf-8")
    assert "| score | AUROC | AUPR-out | AUPR-in | FPR@95TPR |" in md
    assert all(f"| {name} | " in md for name in OOD_SCORES)
    assert not [p.name for p in out.rglob(".*.tmp")]  # atomic writes leave no temp files


def test_json_metrics_are_ood_metrics_of_the_saved_scores(plain_run, plain_report) -> None:
    with np.load(plain_run / "ood" / "scores.npz", allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    assert np.array_equal(saved["id_row"], np.arange(16)) and np.array_equal(saved["ood_row"], np.arange(12))
    for name in OOD_SCORES:
        assert saved[f"id_{name}"].shape == (16,) and saved[f"ood_{name}"].shape == (12,)
        assert plain_report["metrics"][name] == ood_metrics(saved[f"id_{name}"], saved[f"ood_{name}"]), name
    assert np.array_equal(saved["train_row"], np.sort(saved["train_row"])) and len(saved["train_row"]) == 48


def test_logit_scores_are_the_runs_own_logits(plain_run, plain_report, ood_csv) -> None:
    """One encoder pass + the head gives the logits predict_logits gives (the path of evaluate / predict)."""
    loaded = load_run(plain_run)
    modality = get_modality(loaded.cfg.task)
    with np.load(plain_run / "ood" / "scores.npz", allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    logits, labels = loaded.model.predict_logits(modality.read_inputs(loaded, _data(plain_run, "val"), True).loader)
    logits = logits.numpy()
    np.testing.assert_allclose(saved["id_msp"], msp_score(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(saved["id_max_logit"], max_logit_score(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(saved["id_energy"], energy_score(logits, 2.0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(saved["id_energy"], energy_score(logits, 1.0))  # the temperature reached the score
    assert np.array_equal(saved["id_label"], labels.numpy())
    assert plain_report["id_accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == labels.numpy())))


def test_mahalanobis_is_fitted_on_the_training_split_features(plain_run, plain_report) -> None:
    features, labels, loaded = _train_loader_embeddings(plain_run)
    scorer = MahalanobisScorer().fit(features, labels)
    modality = get_modality(loaded.cfg.task)
    id_features, _ = loaded.model.get_embeddings(modality.read_inputs(loaded, _data(plain_run, "val"), False).loader)
    with np.load(plain_run / "ood" / "scores.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["id_mahalanobis"], scorer.score(id_features), rtol=1e-4, atol=1e-4)
    m = plain_report["mahalanobis"]
    assert (m["features"], m["feature_dim"], m["n_train"], m["n_classes"], m["fitted_on"]) == \
        ("backbone", 16, 48, 2, "train")
    assert m["split_seed"] == json.loads((plain_run / "summary.json").read_text())["split_seed"]


def test_hidden_head_scores_mahalanobis_on_head_embed(hidden_run, tmp_path) -> None:
    ood_csv = _write_ood(tmp_path / "ood.csv", label_column=False)  # read_inputs below reads labels strictly
    report = evaluate_ood(hidden_run, _data(hidden_run, "test"), ood_csv, out_dir=tmp_path / "o")
    features, labels, loaded = _train_loader_embeddings(hidden_run)
    head = loaded.model.head
    with torch.inference_mode():
        scorer = MahalanobisScorer().fit(head.embed(features), labels)
        modality = get_modality(loaded.cfg.task)
        ood_features, _ = loaded.model.get_embeddings(modality.read_inputs(loaded, ood_csv, False).loader)
        expected = scorer.score(head.embed(ood_features))
    with np.load(tmp_path / "o" / "scores.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["ood_mahalanobis"], expected, rtol=1e-4, atol=1e-4)
    assert (report["mahalanobis"]["features"], report["mahalanobis"]["feature_dim"]) == ("head_hidden", 8)
    assert not (hidden_run / "ood").exists()  # out_dir given: nothing written into the run


def test_ood_file_without_a_label_column(plain_run, tmp_path) -> None:
    ood = _write_ood(tmp_path / "nolabels.csv", label_column=False)
    report = evaluate_ood(plain_run, _data(plain_run, "test"), ood, out_dir=tmp_path / "o", batch_size=5)
    assert report["n_ood"] == len(OOD_TEXTS) and set(report["metrics"]) == set(OOD_SCORES)


# ---------------------------------------------------------------------------------------------------------
# refusals and errors


def _copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run_copy", ignore=shutil.ignore_patterns("ood")))


def test_regression_run_is_refused(plain_run, ood_csv, tmp_path) -> None:
    run = _copy_run(plain_run, tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    cfg["task"] = "text_regression"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"single-label classification run.*task 'text_regression'"):
        evaluate_ood(run, _data(plain_run, "val"), ood_csv)
    assert not (run / "ood").exists()


def test_multitask_run_is_refused(plain_run, ood_csv, tmp_path) -> None:
    run = _copy_run(plain_run, tmp_path)
    (run / "labels.json").write_text(json.dumps({"kind": "multitask", "tasks": ["a", "b"]}), encoding="utf-8")
    with pytest.raises(ConfigError, match="targets of kind 'multitask'"):
        evaluate_ood(run, _data(plain_run, "val"), ood_csv)


def test_changed_training_data_is_refused(plain_run, ood_csv, tmp_path) -> None:
    """The Mahalanobis fit must be on the run's own training rows: a training file that changed is an error."""
    run = _copy_run(plain_run, tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    train = tmp_path / "train_changed.csv"
    lines = Path(cfg["data"]["train"]).read_text(encoding="utf-8").splitlines()
    train.write_text("\n".join(lines[:-4]) + "\n", encoding="utf-8")
    cfg["data"]["train"] = str(train)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with pytest.raises(DataError, match=r"44 rows .* now, 48 rows .* in the run"):
        evaluate_ood(run, _data(plain_run, "val"), ood_csv, out_dir=tmp_path / "o")


def _fails(capsys: pytest.CaptureFixture[str], argv: list, *facts: str) -> str:
    """The CLI's user-error contract: exit code 2, one ``error:`` paragraph with the facts, no traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert err.startswith("error:") and "Traceback" not in out + err, err
    message = err.removeprefix("error:").strip()
    assert "\n\n" not in message, message
    missing = [f for f in facts if f not in message]
    assert not missing, f"{missing} not in: {message}"
    return message


@pytest.fixture
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)


@pytest.mark.usefixtures("_no_debug")
def test_missing_ood_file_is_one_clear_error(plain_run, tmp_path, capsys) -> None:
    _write_ood(tmp_path / "ood.csv")
    _fails(capsys, ["evaluate", plain_run, "--data", _data(plain_run, "val"), "--ood", tmp_path / "odo.csv",
                    "--out", tmp_path / "o"],
           "--ood", "odo.csv", "does not exist", "Did you mean 'ood.csv'?")


@pytest.mark.usefixtures("_no_debug")
def test_ood_file_with_the_wrong_columns_is_one_clear_error(plain_run, tmp_path, capsys) -> None:
    bad = tmp_path / "renamed.csv"
    bad.write_text("sentence\nzebra quartz\nfjord nymph\n", encoding="utf-8")
    _fails(capsys, ["evaluate", plain_run, "--data", _data(plain_run, "val"), "--ood", bad, "--out", tmp_path / "o"],
           "--ood", "renamed.csv", "no column 'text'", "Available columns: 'sentence'")


@pytest.mark.usefixtures("_no_debug")
def test_id_file_with_unknown_labels_is_refused(plain_run, ood_csv, tmp_path, capsys) -> None:
    """Unlike the OOD file's, the ID file's labels must be the run's classes (a wrong file otherwise)."""
    _fails(capsys, ["evaluate", plain_run, "--data", ood_csv, "--ood", ood_csv, "--out", tmp_path / "o"],
           "--data", "'topic0'", "Known classes: 'neg', 'pos'")


@pytest.mark.usefixtures("_no_debug")
@pytest.mark.parametrize(("extra", "facts"), [
    (["--temperature", "0"], ["temperature must be a positive finite number", "0.0"]),
    (["--ridge", "-1"], ["ridge must be a non-negative finite number"]),
], ids=["temperature", "ridge"])
def test_bad_numbers_are_refused_before_the_model_loads(plain_run, ood_csv, tmp_path, capsys, extra, facts) -> None:
    _fails(capsys, ["evaluate", plain_run, "--data", ood_csv, "--ood", ood_csv, "--out", tmp_path / "o", *extra],
           *facts)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.usefixtures("_no_debug")
def test_ood_options_without_ood_are_refused(plain_run, ood_csv, capsys) -> None:
    _fails(capsys, ["evaluate", plain_run, "--data", ood_csv, "--temperature", "2", "--out", "x"],
           "--temperature, --out only apply with --ood")


@pytest.mark.usefixtures("_no_debug")
def test_unwritable_output_folder_is_one_clear_error(plain_run, ood_csv, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    _fails(capsys, ["evaluate", plain_run, "--data", ood_csv, "--ood", ood_csv, "--out", blocker / "o"],
           "Cannot write the OOD results", "--out DIR")


# ---------------------------------------------------------------------------------------------------------
# the real CLI process


def test_cli_evaluate_with_ood_prints_the_table(plain_run, ood_csv, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HEADSTART_DEBUG"}
    out = tmp_path / "cli_ood"
    proc = subprocess.run(
        [sys.executable, "-m", "headstart.cli.main", "evaluate", str(plain_run), "--data",
         str(_data(plain_run, "val")), "--ood", str(ood_csv), "--temperature", "1.5", "--out", str(out),
         "--output", str(tmp_path / "report.json")],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "| score | AUROC | AUPR-out | AUPR-in | FPR@95TPR |" in lines
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "score" not in line}
    assert list(rows) == list(OOD_SCORES)
    report = json.loads((out / "ood.json").read_text(encoding="utf-8"))
    assert report["temperature"] == 1.5
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8")) == report
    for name in OOD_SCORES:  # the printed table is the json's metrics, rounded
        cells = [c.strip() for c in rows[name].split("|")[2:6]]
        assert cells == [f"{report['metrics'][name][k]:.4f}" for k in OOD_METRICS], name
    assert f"Written to {out}" in proc.stdout


# ---------------------------------------------------------------------------------------------------------
# the plots' curves


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plot_curves_agree_with_the_metrics(seed, tmp_path) -> None:
    rng = np.random.default_rng(seed)
    s_id = np.round(rng.normal(1.0, 1.0, 40), 1)  # rounded: ties inside and across the sets
    s_ood = np.round(rng.normal(0.0, 1.0, 25), 1)
    m = ood_metrics(s_id, s_ood)
    fpr, tpr = roc_points(s_id, s_ood)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(m["auroc"], abs=1e-12)
    assert m["auroc"] == pytest.approx(roc_auc_binary(np.r_[np.ones(40), np.zeros(25)], np.r_[s_id, s_ood]))
    assert fpr[np.argmax(tpr >= 0.95)] == pytest.approx(m["fpr95"])
    for positive, key in (("ood", "aupr_out"), ("id", "aupr_in")):
        recall, precision = pr_points(s_id, s_ood, positive)
        assert recall[-1] == 1.0
        assert np.sum(np.diff(np.r_[0.0, recall]) * precision) == pytest.approx(m[key], abs=1e-12)
    files = plot_ood({"a": s_id, "b": -s_id}, {"a": s_ood, "b": -s_ood}, tmp_path)
    assert sorted(files) == ["ood_pr.png", "ood_roc.png"] and all(p.stat().st_size > 0 for p in files.values())


def test_plots_need_the_same_scores_for_both_sets(tmp_path) -> None:
    with pytest.raises(DataError, match="same, non-empty score names"):
        plot_ood({"msp": [0.9]}, {"energy": [0.1]}, tmp_path)


# ---------------------------------------------------------------------------------------------------------
# another modality and head: images with a CosFace head


def test_image_run_with_a_margin_head(tmp_path) -> None:
    """The path never asks for the modality: a tiny ResNet + CosFace run on quadrant images, OOD = noise images
    whose 'y' holds a class the run never saw (ignored, as for text)."""
    cfg = load_config(None, raw=tiny_image_config(tmp_path, trainer={"epochs": 1}))
    run = run_fit(cfg, verbose=False).run_dir
    id_npz = write_quadrant_npz(tmp_path / "id.npz", 20, seed=5, shift=40)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "noise.npz", x=rng.integers(0, 255, size=(15, 8, 8)).astype(np.uint8),
             y=np.full(15, 9))
    report = evaluate_ood(run, id_npz, tmp_path / "noise.npz", out_dir=tmp_path / "o")
    assert (report["n_id"], report["n_ood"]) == (20, 15) and list(report["metrics"]) == list(OOD_SCORES)
    m = report["mahalanobis"]
    assert (m["features"], m["feature_dim"], m["n_classes"]) == ("head_hidden", 8, 4)
    assert m["n_train"] == json.loads((run / "summary.json").read_text())["n_train"]
    with np.load(tmp_path / "o" / "scores.npz", allow_pickle=False) as z:
        assert report["metrics"]["energy"] == ood_metrics(z["id_energy"], z["ood_energy"])
