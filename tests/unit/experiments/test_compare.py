"""`headstart compare`: the grid spec, identical splits, resume that skips finished runs, runs by hand."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import yaml

from conftest import ctrl_c_in_epoch_2_of, tiny_run_config
from headstart.cli.main import main
from headstart.errors import ConfigError, RunInterrupted
from headstart.experiments.compare import compare_run_dirs, parse_seeds, parse_strategies, run_compare

TIMING = {"wall_time_s", "train_time_s", "peak_rss_mb", "peak_rss_train_mb", "cache_used", "run_dir"}


def test_strategy_specs_with_overrides() -> None:
    cells = parse_strategies("linear_probe[optim.lr=1e-2,optim.weight_decay=0],partial:2,full")
    assert [c.label for c in cells] == ["linear_probe[optim.lr=1e-2,optim.weight_decay=0]", "partial:2", "full"]
    assert cells[0].fields == {"name": "linear_probe"}
    assert cells[0].overrides == ((("optim", "lr"), 0.01), (("optim", "weight_decay"), 0))
    assert cells[1].fields == {"name": "partial", "train_last": 2} and cells[1].slug == "partial-2"
    assert cells[0].slug.startswith("linear_probe-")


@pytest.mark.parametrize(("spec", "message"), [
    ("linear_probe[optim.lr=1e-2", "is never closed"),
    ("full,full", "listed twice"),
    ("lienar_probe", "Did you mean 'linear_probe'"),
    ("full[trainer.seed=3]", "compare sets for every cell"),
    ("", "--strategies is empty"),
])
def test_bad_strategy_specs_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_strategies(spec)


def test_seeds() -> None:
    assert parse_seeds("42,43,44") == [42, 43, 44]
    assert parse_seeds("1-3,3,7") == [1, 2, 3, 7]
    with pytest.raises(ConfigError, match="'x' is not a whole number"):
        parse_seeds("1,x")


def _metrics(path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {r["run"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_hf_dir):
    """A grid (seeds 0, 1) whose last run gets Ctrl-C in epoch 2, then the full grid (seeds 0, 1, 2) run in the
    same directory: finished runs are skipped and the stopped one resumes."""
    tmp = tmp_path_factory.mktemp("compare")
    config = tmp / "base.yaml"
    raw = tiny_run_config(tmp, tiny_hf_dir)
    raw["data"]["train_subset"] = 40  # seeded subset: the split seed decides which 40 rows
    raw["trainer"]["epochs"] = 3
    config.write_text(yaml.safe_dump(raw))
    spec = "linear_probe[optim.lr=5e-2],full"
    with ctrl_c_in_epoch_2_of("full_s1"), pytest.raises(RunInterrupted) as stopped:
        run_compare(config, spec, "0,1", output_dir=tmp / "cmp", workers=0, verbose=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp / "cmp" / "runs").glob("*/checkpoints/best.safetensors")}
    first_metrics = _metrics(tmp / "cmp" / "results.csv")
    second = run_compare(config, spec, "0,1,2", output_dir=tmp / "cmp", workers=0, verbose=False)
    fresh = run_compare(config, spec, "0,1,2", output_dir=tmp / "fresh", workers=0, verbose=False)
    return {"tmp": tmp, "config": config, "spec": spec, "stopped": stopped.value, "second": second,
            "fresh": fresh, "stamps": stamps, "first_metrics": first_metrics}


def test_ctrl_c_stops_the_grid_and_says_how_to_resume(grid) -> None:
    stopped = grid["stopped"]
    assert stopped.exit_code == 130
    assert "3 of 4 runs are finished, 1 stopped mid-run" in str(stopped)
    assert "run the same command again" in str(stopped)
    assert grid["first_metrics"]["full_s1"]["status"] == "interrupted"
    assert not (grid["tmp"] / "cmp" / ".headstart.lock").read_text()  # released


def test_grid_rows_and_identical_splits(grid) -> None:
    rows = grid["second"].rows
    assert [(r["strategy"], r["seed"]) for r in rows] == [
        (s, seed) for s in ("linear_probe[optim.lr=5e-2]", "full") for seed in (0, 1, 2)]
    assert all(r["status"] == "done" for r in rows)
    summaries = [json.loads((grid["tmp"] / "cmp" / r["run_dir"] / "summary.json").read_text()) for r in rows]
    assert {s["split_seed"] for s in summaries} == {0}  # the base config's seed, pinned for every cell
    assert {s["seed"] for s in summaries} == {0, 1, 2}
    assert {s["n_train"] for s in summaries} == {40}
    lp = [s for s, r in zip(summaries, rows, strict=True) if r["strategy"].startswith("linear_probe")]
    assert all(s["trainable_params"] < summaries[-1]["trainable_params"] for s in lp)
    run_cfg = yaml.safe_load((grid["tmp"] / "cmp" / rows[0]["run_dir"] / "config.yaml").read_text())
    assert run_cfg["optim"]["lr"] == 0.05 and run_cfg["strategy"]["name"] == "linear_probe"
    for name in ("results.csv", "summary.md", "report.html", "compare.json"):
        assert (grid["tmp"] / "cmp" / name).exists(), name


def test_resume_skips_finished_runs_and_matches_a_fresh_grid(grid) -> None:
    for path, stamp in grid["stamps"].items():
        if "full_s1" not in str(path):
            assert path.stat().st_mtime_ns == stamp, f"{path} was retrained"
    resumed = _metrics(grid["tmp"] / "cmp" / "results.csv")
    for name, metrics in grid["first_metrics"].items():
        if name != "full_s1":
            assert resumed[name] == metrics
    assert resumed == _metrics(grid["tmp"] / "fresh" / "results.csv")
    # the interrupted run continued from its last.ckpt instead of starting again
    assert json.loads((grid["tmp"] / "cmp" / "runs" / "full_s1" / "summary.json").read_text())["resumed"] is True
    assert json.loads((grid["tmp"] / "cmp" / "runs" / "full_s2" / "summary.json").read_text())["resumed"] is False


def test_changed_cell_is_rerun(grid, tmp_path) -> None:
    shutil.copytree(grid["tmp"] / "cmp", tmp_path / "cmp")
    result = run_compare(grid["config"], "full", "0", output_dir=tmp_path / "cmp", workers=0, verbose=False,
                         overrides=[(["optim", "lr"], 2e-2)])
    run_cfg = yaml.safe_load((tmp_path / "cmp" / result.rows[0]["run_dir"] / "config.yaml").read_text())
    assert run_cfg["optim"]["lr"] == 0.02


def test_compare_existing_run_dirs(grid, tmp_path) -> None:
    runs = sorted((grid["tmp"] / "fresh" / "runs").iterdir())
    result = compare_run_dirs(runs, tmp_path / "by_hand")
    assert sorted({r["strategy"] for r in result.rows}) == ["full", "linear_probe"]
    assert (tmp_path / "by_hand" / "report.html").exists()
    with pytest.raises(ConfigError, match="pairs by seed would be ambiguous"):
        compare_run_dirs([runs[0], runs[0]], tmp_path / "dupes")


def test_cli_errors(grid, capsys) -> None:
    assert main(["compare", str(grid["config"])]) == 2
    assert "needs --strategies" in capsys.readouterr().err
    assert main(["compare", str(grid["config"]), str(grid["tmp"] / "cmp" / "runs" / "full_s0")]) == 2
    assert "not both" in capsys.readouterr().err


def test_bad_override_fails_before_any_run(grid, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"Strategy 'full\[optim.lr=fast\]' gives an invalid config"):
        run_compare(grid["config"], "linear_probe,full[optim.lr=fast]", "0", output_dir=tmp_path / "x", workers=0)
    assert not (tmp_path / "x" / "runs").exists()
    with pytest.raises(ConfigError, match=r"'gradual' needs strategy\.freeze_epochs >= 1"):
        run_compare(grid["config"], "full,gradual:0", "0", output_dir=tmp_path / "x", workers=0)


def test_worker_processes_give_the_same_numbers(grid, tmp_path) -> None:
    """Two spawned worker processes (one thread each) reproduce the in-process runs exactly."""
    result = run_compare(grid["config"], "full", "0,1", output_dir=tmp_path / "w2", workers=2, verbose=False)
    assert [r["status"] for r in result.rows] == ["done", "done"]
    fresh = _metrics(grid["tmp"] / "fresh" / "results.csv")
    for name, metrics in _metrics(tmp_path / "w2" / "results.csv").items():
        assert metrics == fresh[name]
    log = (tmp_path / "w2" / "logs" / "full_s0.log").read_text()
    assert "epoch 1: 3/3 blocks trainable" in log  # the run's log lines reach its log file
    assert "epoch 1/3  train_loss" in log and "epoch 3/3  train_loss" in log  # one plain line per epoch


def test_block_range_lists_stay_one_strategy() -> None:
    """A comma followed by a digit continues a spec's block-range list: partial:0-2,5 freezes blocks 0-2 and 5."""
    cells = parse_strategies("full,partial:0-2,5,partial:1, 3[optim.lr=1e-2],lora:4")
    assert [c.label for c in cells] == ["full", "partial:0-2,5", "partial:1, 3[optim.lr=1e-2]", "lora:4"]
    assert cells[1].fields == {"name": "partial", "freeze": "0-2,5"} and cells[1].slug == "partial-0-2-5"
    assert cells[2].fields == {"name": "partial", "freeze": "1, 3"} and cells[2].overrides == ((("optim", "lr"), 0.01),)
    assert [c.label for c in parse_strategies("partial:2,full")] == ["partial:2", "full"]
    with pytest.raises(ConfigError, match="'5' is not a strategy"):  # no ':' before: a number alone is no spec
        parse_strategies("full,5")


@pytest.mark.parametrize(("spec", "fact"), [
    ("bogus", "'bogus' is not a strategy."),
    ("lora:big", "'big' in 'lora:big' is not a whole number"),
    ("partial:x", "Block range 'x' (strategy.freeze) is not understood"),
    ("partial:0", "'partial:0' trains none of the blocks"),
])
def test_bad_spec_in_the_grid_lists_the_valid_forms(spec: str, fact: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_strategies(f"full,{spec}")
    message = str(info.value)
    assert message.startswith(f"Strategy '{spec}' in --strategies is not understood: ") and fact in message
    assert "Use one of: full, linear_probe, partial:K" in message and "lora[:R]" in message


def test_baseline_by_its_plain_name_when_one_strategy_has_it() -> None:
    from headstart.experiments.compare import resolve_baseline

    labels = ["linear_probe[optim.lr=1e-2]", "partial:2", "full"]
    assert resolve_baseline("linear_probe", labels) == "linear_probe[optim.lr=1e-2]"
    assert resolve_baseline("full", labels) == "full" and resolve_baseline(None, labels) is None
    two = ["full[optim.lr=1e-3]", "full[optim.lr=1e-4]"]
    with pytest.raises(ConfigError, match=r"--baseline 'full' matches 2 strategies of the grid .* give the one you "
                                          r"mean in full, e\.g\. --baseline 'full\[optim\.lr=1e-3\]'"):
        resolve_baseline("full", two)
    with pytest.raises(ConfigError, match=r"--baseline 'ful' is not one of the strategies .*Did you mean 'full'"):
        resolve_baseline("ful", labels)


def test_classic_baseline_row_matches_scikit_learn_and_is_reported(grid) -> None:
    """The grid's classic row (TF-IDF + logistic regression on the grid's split) is in results.csv, summary.md and
    report.html, equals a direct scikit-learn run on the same rows, and the reports say whether it wins."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from headstart.baselines import verdict
    from headstart.config import load_config
    from headstart.experiments.fit import load_splits

    out = grid["tmp"] / "cmp"
    with open(out / "results.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    classic = rows[-1]
    assert classic["strategy"] == "baseline:tfidf_logreg" and classic["status"] == "done" and classic["seed"] == ""
    assert classic["note"].startswith("classic baseline: TF-IDF + logistic regression (TF-IDF word 1-2-grams, C=")
    assert grid["second"].classic["strategy"] == "baseline:tfidf_logreg"
    assert all(r["strategy"] != classic["strategy"] for r in grid["second"].rows)  # not a strategy of the grid
    saved = json.loads((out / "classic_baseline.json").read_text())
    splits = load_splits(load_config(grid["config"]), 0)  # the grid's split seed: the base config's seed
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=200_000)
    model = LogisticRegression(C=saved["result"]["params"]["C"], max_iter=2000)
    model.fit(vectorizer.fit_transform(splits.train["text"]), splits.train["label"])
    for split in ("val", "test"):
        frame = getattr(splits, split)
        acc = float(np.mean(model.predict(vectorizer.transform(frame["text"])) == frame["label"].to_numpy()))
        assert float(classic[f"{split}_acc"]) == pytest.approx(acc, abs=1e-12)
    means = {s: float(np.mean([float(r["test_acc"]) for r in rows if r["strategy"] == s]))
             for s in ("linear_probe[optim.lr=5e-2]", "full")}
    sentence = verdict("TF-IDF + logistic regression", float(classic["test_acc"]), means, "test_acc")
    assert sentence.startswith(("The classic baseline (TF-IDF + logistic regression) beats",
                                "Every fine-tuned strategy beats the classic baseline"))
    summary, html = (out / "summary.md").read_text(), (out / "report.html").read_text()
    assert "## Classic baseline" in summary and "| baseline:tfidf_logreg (classic) | 1 | 0 |" in summary
    assert sentence in summary and sentence in html and "<h2>Classic baseline</h2>" in html


def test_classic_baseline_is_reused_and_can_be_left_out(grid, tmp_path) -> None:
    shutil.copytree(grid["tmp"] / "cmp", tmp_path / "cmp")
    saved = tmp_path / "cmp" / "classic_baseline.json"
    stamp = saved.stat().st_mtime_ns
    result = run_compare(grid["config"], grid["spec"], "0,1,2", output_dir=tmp_path / "cmp", workers=0, verbose=False)
    assert saved.stat().st_mtime_ns == stamp and result.classic is not None  # same split: not fitted again
    assert main(["compare", str(grid["config"]), "--strategies", grid["spec"], "--seeds", "0,1,2", "--workers", "0",
                 "--output-dir", str(tmp_path / "cmp"), "--no-classic-baseline"]) == 0
    assert "baseline:" not in (tmp_path / "cmp" / "results.csv").read_text()
    assert "Classic baseline" not in (tmp_path / "cmp" / "summary.md").read_text()
