"""`headstart tune` end to end on a tiny BERT: trials are run directories, the study resumes (also after a
killed process), two workers share one SQLite study, best.yaml reproduces the best trial, the pruner stops bad
trials, the frozen prefix is cached once for all trials."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch import nn

from conftest import tiny_run_config, write_text_csv
from headstart.cli.main import main
from headstart.errors import ConfigError
from headstart.tune import run_tune
from headstart.tune.study import import_optuna
from headstart.tune.trial import ReportToTrial

LP_SPACE = {"params": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True},
                       "optim.weight_decay": {"low": 0.0, "high": 0.1}}}
STRATEGY_SPACE = {"params": {"strategy.name": {"choices": ["linear_probe", "partial", "lora"]},
                             "strategy.train_last": {"low": 1, "high": 2},
                             "strategy.lora.r": {"choices": [2, 4]},
                             "optim.lr": {"low": 1e-3, "high": 1e-1, "log": True},
                             "optim.encoder_lr": {"low": 1e-4, "high": 1e-2, "log": True}}}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "headstart.cli.main", *args]


def _trials(out: Path) -> list[dict[str, str]]:
    with (out / "trials.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _files(tmp: Path, model_dir: Path, space: dict, **sections) -> tuple[Path, Path]:
    raw = tiny_run_config(tmp, model_dir, **sections)
    config, space_path = tmp / "base.yaml", tmp / "space.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    space_path.write_text(yaml.safe_dump(space), encoding="utf-8")
    return config, space_path


@pytest.fixture(scope="module")
def lp_study(tmp_path_factory, tiny_hf_dir):
    """A linear-probe study: 2 trials, then the same command continued to 3 (in this process)."""
    tmp = tmp_path_factory.mktemp("tune_lp")
    # its own feature cache: other tests' runs of the same tiny model and rows would make trial 0 a hit
    config, space = _files(tmp, tiny_hf_dir, LP_SPACE, strategy={"name": "linear_probe"},
                           cache={"dir": str(tmp / "cache")})
    out = tmp / "tune"
    first = run_tune(config, space, n_trials=2, workers=0, output_dir=out, pruner="none", verbose=False)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/summary.json")}
    second = run_tune(config, space, n_trials=3, workers=0, output_dir=out, pruner="none", verbose=False)
    return {"tmp": tmp, "config": config, "space": space, "out": out, "first": first, "second": second,
            "stamps": stamps}


def test_every_trial_is_a_run_directory_and_a_rerun_continues_the_numbering(lp_study) -> None:
    out = lp_study["out"]
    assert [r["number"] for r in lp_study["first"].rows] == [0, 1]
    rows = _trials(out)
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    for r in rows:
        run = out / r["run_dir"]
        assert (run / "summary.json").exists() and (run / "config.yaml").exists()
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["optim"]["lr"] == pytest.approx(float(r["param:optim.lr"]))
        assert cfg["data"]["split_seed"] == 0 and cfg["trainer"]["monitor"] == "val_acc"
        assert r["val_acc@1"] and r["val_acc@2"]  # the metric after every epoch
    # the second command ran only trial 2: the first two were not touched
    assert {p: p.stat().st_mtime_ns for p in lp_study["stamps"]} == lp_study["stamps"]
    assert (out / "study.db").exists() and (out / "report.html").exists() and (out / "summary.md").exists()
    assert (out / "plots" / "optimization_history.png").exists()
    assert (out / "plots" / "best_curves.png").exists()


def test_frozen_features_are_computed_once_for_all_trials(lp_study) -> None:
    rows = _trials(lp_study["out"])
    assert rows[0]["cache_hits"] == "0" and int(rows[0]["cache_entries"]) == 3  # train, val, test built
    assert [r["cache_hits"] for r in rows[1:]] == ["3", "3"]  # ... and reused by every later trial


def test_best_yaml_reproduces_the_best_trial_through_the_cli(lp_study) -> None:
    out = lp_study["out"]
    best = lp_study["second"].best
    assert best is not None
    assert best["value"] == max(r["value"] for r in lp_study["second"].rows)
    assert main(["fit", str(out / "best.yaml")]) == 0
    again = json.loads((out / "best-run" / "summary.json").read_text())
    trial = json.loads((out / f"trials/{best['number']}" / "summary.json").read_text())
    assert again["val"] == trial["val"] and again["test"] == trial["test"]
    assert again["best_epoch"] == trial["best_epoch"]


def test_a_study_continues_only_the_search_it_began(lp_study) -> None:
    other = lp_study["tmp"] / "other_space.yaml"
    other.write_text(yaml.safe_dump({"params": {"optim.lr": {"low": 1e-4, "high": 1e-3, "log": True}}}))
    with pytest.raises(ConfigError, match="was made with another the search space"):
        run_tune(lp_study["config"], other, n_trials=4, workers=0, output_dir=lp_study["out"], verbose=False)
    with pytest.raises(ConfigError, match="made to maximize its metric, not minimize"):
        run_tune(lp_study["config"], lp_study["space"], n_trials=4, workers=0, output_dir=lp_study["out"],
                 direction="min", verbose=False)
    with pytest.raises(ConfigError, match="is not a validation metric"):
        run_tune(lp_study["config"], lp_study["space"], n_trials=4, workers=0, output_dir=lp_study["out"],
                 metric="test_acc", verbose=False)


class _LogsMetric(pl.LightningModule):
    """Trains a single weight and reports a fixed val_acc every epoch."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.layer, self.value = nn.Linear(2, 1), value

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_acc", self.value)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(value: float, trial) -> tuple[pl.Trainer, ReportToTrial]:
    from torch.utils.data import DataLoader, TensorDataset

    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    reporter = ReportToTrial(trial, "val_acc")
    trainer = pl.Trainer(max_epochs=5, callbacks=[reporter], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(_LogsMetric(value), data, data)
    return trainer, reporter


def test_the_pruner_stops_a_trial_that_reports_a_bad_value_and_lets_a_good_one_run() -> None:
    optuna = import_optuna()
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask()
    _fit(0.8, first)
    study.tell(first, 0.8)
    bad = study.ask()
    trainer, reporter = _fit(0.1, bad)
    assert reporter.pruned_at == 1 and trainer.current_epoch == 1  # stopped after its first epoch
    assert bad.user_attrs["pruned_at_epoch"] == 1
    study.tell(bad, state=optuna.trial.TrialState.PRUNED)
    good = study.ask()
    trainer, reporter = _fit(0.9, good)
    assert reporter.pruned_at is None and trainer.current_epoch == 5
    trials = study.get_trials()
    assert list(trials[1].intermediate_values) == [1] and list(trials[2].intermediate_values) == [1, 2, 3, 4, 5]


def test_pruned_trials_keep_their_metrics_and_drop_their_weights(tmp_path, tiny_hf_dir) -> None:
    config, space = _files(tmp_path, tiny_hf_dir, {"params": {"optim.lr": {"choices": [5e-2, 1e-9]}}},
                           strategy={"name": "linear_probe"}, trainer={"epochs": 3})
    out = tmp_path / "tune"
    # lr 1e-9 learns nothing: once a good trial finished, the median pruner stops it after epoch 1
    optuna = import_optuna()
    out.mkdir()
    store = optuna.storages.RDBStorage(f"sqlite:///{(out / 'study.db').resolve()}")
    study = optuna.create_study(study_name="run", storage=store, direction="maximize")
    study.enqueue_trial({"optim.lr": 5e-2})
    study.enqueue_trial({"optim.lr": 1e-9})
    result = run_tune(config, space, n_trials=2, workers=0, output_dir=out, pruner="median", pruner_startup=1,
                      verbose=False)
    rows = {r["number"]: r for r in result.rows}
    assert rows[0]["state"] == "COMPLETE" and rows[1]["state"] == "PRUNED", rows
    assert rows[1]["pruned_at_epoch"] == 1 and rows[1]["epochs_run"] == 1
    pruned = out / "trials" / "1"
    assert (pruned / "summary.json").exists() and (pruned / "metrics.csv").exists()
    assert not list((pruned / "checkpoints").glob("*.safetensors"))
    assert (out / "trials" / "0" / "checkpoints" / "best.safetensors").exists()
    assert "The pruner stopped 1 trial(s)" in (out / "summary.md").read_text()


def test_two_worker_processes_finish_n_trials_in_all_without_duplicates(tmp_path, tiny_hf_dir) -> None:
    config, space = _files(tmp_path, tiny_hf_dir, STRATEGY_SPACE)
    out = tmp_path / "tune"
    done = subprocess.run(_cli("tune", str(config), "--space", str(space), "--n-trials", "4", "--workers", "2",
                               "--output-dir", str(out), "--pruner", "none"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    rows = _trials(out)
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"] and {r["state"] for r in rows} == {"COMPLETE"}
    assert len({p for p in out.glob("trials/*")}) == 4 and len(list(out.glob("logs/trial-*.log"))) == 4
    for r in rows:  # each trial ran once, in its own directory, with its own params
        cfg = yaml.safe_load((out / r["run_dir"] / "config.yaml").read_text())
        assert cfg["strategy"]["name"] == r["param:strategy.name"]
        assert cfg["trainer"]["threads"] == 1  # cores / workers on this 2-core machine
    assert "Report:" in done.stdout and (out / "best.yaml").exists()


def test_a_killed_tune_resumes_its_stopped_trial_from_last_ckpt(tmp_path, tiny_hf_dir) -> None:
    config, space = _files(tmp_path, tiny_hf_dir, LP_SPACE, strategy={"name": "full"}, trainer={"epochs": 3})
    raw = yaml.safe_load(config.read_text())
    raw["data"]["train"] = str(write_text_csv(tmp_path / "data" / "train_big.csv", 1200, seed=1))
    raw["data"]["batch_size"] = 4  # long epochs: the kill lands inside trial 1's second epoch
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "tune"
    args = _cli("tune", str(config), "--space", str(space), "--n-trials", "2", "--workers", "0", "--output-dir",
                str(out), "--pruner", "none")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    side = out / "trials" / "1" / "checkpoints" / "last.json"
    deadline = time.monotonic() + 600
    while not (side.exists() and json.loads(side.read_text() or "{}").get("epoch") == 1):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)

    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 stopped earlier and queued again ([1])" in again.stdout
    rows = _trials(out)
    assert [(r["number"], r["state"], r["retry_of"]) for r in rows] == [
        ("0", "COMPLETE", ""), ("1", "FAIL", ""), ("2", "COMPLETE", "1")]
    resumed = json.loads((out / "trials" / "2" / "summary.json").read_text())
    assert resumed["resumed"] is True and resumed["epochs_run"] == 3
    assert not (out / "trials" / "1").exists()  # its directory continued as trial 2
    assert rows[2]["val_acc@1"] and rows[2]["val_acc@3"]  # the epochs before the kill were kept
    assert rows[2]["param:optim.lr"] == rows[1]["param:optim.lr"]


def test_tune_errors_are_one_paragraph_from_the_cli(tmp_path, tiny_hf_dir, capsys) -> None:
    config, space = _files(tmp_path, tiny_hf_dir, {"params": {"optim.lrr": {"low": 1e-3, "high": 1e-2}}})
    assert main(["tune", str(config), "--space", str(space), "--n-trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "optim has no 'lrr'. Did you mean 'lr'?" in err and "Traceback" not in err
    assert main(["tune", str(config), "--space", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_compare_re_runs_the_top_trials_over_seeds(lp_study) -> None:
    out = lp_study["out"]
    assert main(["compare", str(out), "--top", "2", "--seeds", "5,6", "--workers", "0"]) == 0
    with (out / "top-compare" / "results.csv").open(newline="") as fh:
        runs = [r for r in csv.DictReader(fh) if not r["strategy"].startswith("baseline:")]  # the classic row
    best_two = sorted(lp_study["second"].rows, key=lambda r: -r["value"])[:2]
    labels = [f"trial{r['number']} linear_probe" for r in best_two]
    assert [(r["strategy"], r["seed"]) for r in runs] == [(lab, s) for lab in labels for s in ("5", "6")]
    for run in runs:  # the trial's config, on the tune's split, with only the seed changed
        number = run["strategy"].split()[0].removeprefix("trial")
        trial = yaml.safe_load((out / "trials" / number / "config.yaml").read_text())
        again = yaml.safe_load((out / "top-compare" / run["run_dir"] / "config.yaml").read_text())
        assert again["optim"] == trial["optim"] and again["strategy"] == trial["strategy"]
        assert again["data"]["split_seed"] == trial["data"]["split_seed"] and again["trainer"]["seed"] == int(run["seed"])


def test_two_commands_on_one_storage_share_the_study_like_two_machines(tmp_path, tiny_hf_dir) -> None:
    config, space = _files(tmp_path, tiny_hf_dir, LP_SPACE, strategy={"name": "linear_probe"})
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [subprocess.Popen(_cli("tune", str(config), "--space", str(space), "--n-trials", "5", "--workers", "0",
                                   "--storage", url, "--output-dir", str(tmp_path / f"machine{i}"), "--pruner",
                                   "none"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
    optuna = import_optuna()
    trials = optuna.load_study(study_name="run", storage=url).get_trials()
    ran = [t for t in trials if not t.user_attrs.get("surplus")]
    assert len(ran) == 5 and {t.state.name for t in ran} == {"COMPLETE"}
    dirs = [d for i in range(2) for d in (tmp_path / f"machine{i}" / "trials").iterdir()]
    assert sorted(int(d.name) for d in dirs) == sorted(t.number for t in ran)  # each trial ran once, somewhere
    # a machine's trials.csv is the whole study as it stood when it finished: the last one sees all 5 trials
    assert max(len(_trials(tmp_path / f"machine{i}")) for i in range(2)) == 5


@pytest.mark.parametrize(("name", "cls"), [("median", "MedianPruner"), ("halving", "SuccessiveHalvingPruner"),
                                          ("hyperband", "HyperbandPruner"), ("none", "NopPruner")])
def test_pruners_by_name(name: str, cls: str) -> None:
    from headstart.tune.study import PrunerSpec, make_pruner

    pruner = make_pruner(PrunerSpec(name, max_epochs=9))
    assert type(pruner).__name__ == cls


def test_unknown_pruner_or_sampler_says_the_valid_names() -> None:
    from headstart.tune.study import PrunerSpec, make_sampler

    with pytest.raises(ConfigError, match=re.escape("--pruner 'hyperbnd' is unknown. Did you mean 'hyperband'?")):
        PrunerSpec("hyperbnd")
    with pytest.raises(ConfigError, match=re.escape("--sampler 'tpee' is unknown. Did you mean 'tpe'?")):
        make_sampler("tpee", 0)


def test_a_bad_storage_url_is_a_config_error(tmp_path) -> None:
    from headstart.tune.study import open_storage

    with pytest.raises(ConfigError, match="is not a database URL"):
        open_storage("study.db")
    with pytest.raises(ConfigError, match="could not be opened"):
        open_storage("nosuchdialect://host/db")
