"""CoLES pretraining: `headstart pretrain --objective coles` learns from unlabelled events, writes a run
directory and an export that `fit --pretrain` loads with every encoder key (and the same vocabularies)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from conftest import assert_pretrain_resumes_exactly, tiny_image_config
from headstart.cli.main import main
from headstart.config import PretrainObjectiveConfig, load_config
from headstart.data.events import EventFields, EventSet
from headstart.errors import ConfigError, DataError
from headstart.experiments.fit import build_model_for_splits, load_splits, run_fit
from headstart.pretraining import get_objective, objective_names, run_pretrain
from headstart.pretraining.coles import (
    ColesLoss,
    ColesModule,
    ColesViews,
    collate_views,
    make_splitter,
    select_entities,
)
from headstart.train.checkpoint import read_state_dict
from headstart.train.pretrained import PRETRAINED_META, PRETRAINED_WEIGHTS, load_pretrained

EVENTS = {"id_column": "client", "time_column": "day", "categorical": ["mcc"], "numeric": {"amount": "log1p"}}


def _events(path: Path, n_entities: int, seed: int, start: int = 0, labels: bool = False,
            common: str = "m0") -> Path:
    """Entities with a signature (a favourite category, an amount scale), so an entity's views look alike.
    ``common`` is the category every entity also buys most often: it sets the vocabulary's first entry."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(start, start + n_entities):
        favourite, scale = f"m{e % 6}", 0.5 + (e % 5)
        for day in range(int(rng.integers(4, 13))):
            draw = rng.random()
            mcc = favourite if draw < 0.5 else common if draw < 0.8 else f"m{rng.integers(0, 8)}"
            row = (f"c{e}", day, mcc, round(float(rng.lognormal(scale, 0.2)), 3))
            rows.append(row + ((e % 2,) if labels else ()))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    header = "client,day,mcc,amount" + (",label" if labels else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _coles_raw(tmp: Path, **objective: Any) -> dict[str, Any]:
    return {
        "name": "coles", "output_dir": str(tmp / "coles"),
        "data": {"train": str(_events(tmp / "a" / "train.csv", 48, 0)),
                 "val": str(_events(tmp / "a" / "val.csv", 16, 1, start=100)),
                 "batch_size": 8, "eval_batch_size": 16, "events": EVENTS},
        "backbone": {"sequence": {"encoder": "gru", "hidden_size": 16}},
        "optim": {"lr": 1e-2, "warmup_steps": 0},
        "objective": {"split_count": 3, "min_len": 2, "max_len": 8, **objective},
        "trainer": {"epochs": 4, "seed": 0, "progress_bar": False, "threads": 1},
    }


@pytest.fixture(scope="module")
def coles_run(tmp_path_factory) -> Path:
    """`headstart pretrain CONFIG --objective coles` on events without a label column."""
    tmp = tmp_path_factory.mktemp("coles")
    raw = _coles_raw(tmp)
    path = tmp / "coles.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", str(path), "--objective", "coles"]) == 0
    return Path(raw["output_dir"])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_coles_learns_without_labels_and_writes_a_run_directory(coles_run: Path) -> None:
    header = (coles_run.parent / "a" / "train.csv").read_text().splitlines()[0]
    assert "label" not in header  # nothing to read labels from
    losses = [float(r["train_loss"]) for r in _rows(coles_run / "metrics.csv")]
    val = [float(r["val_loss"]) for r in _rows(coles_run / "metrics.csv")]
    assert len(losses) == 4 and losses[-1] < losses[0] and min(val[1:]) < val[0], (losses, val)
    for name in ("config.yaml", "data_state.json", "lr_steps.csv", "checkpoints/best.safetensors",
                 "plots/curves.png", PRETRAINED_WEIGHTS, PRETRAINED_META):
        assert (coles_run / name).exists(), name
    assert not (coles_run / "checkpoints" / "last.ckpt").exists()  # dropped after success, like fit
    saved = load_config(coles_run / "config.yaml")
    assert (saved.objective.name, saved.trainer.monitor, saved.trainer.monitor_mode) == ("coles", "val_loss", "min")
    summary = json.loads((coles_run / "summary.json").read_text())
    assert summary["monitor"] == "val_loss" and summary["best_value"] == pytest.approx(min(val), abs=1e-6)
    assert set(summary["val"]) == {"loss", "recall_top_k"} and summary["export_max_abs_diff"] <= 1e-5
    assert summary["short_histories"] == {"policy": "keep", "min_len": 2, "train": 0, "val": 0}
    assert summary["whole_history_views"] == {"train": 0, "val": 0}  # every history has 4+ events
    record = json.loads((coles_run / PRETRAINED_META).read_text())
    assert record["objective"]["name"] == "coles" and record["classes"] == [] and record["n_classes"] == 0
    assert record["architecture"]["fields"]["categorical"]["mcc"] == len(record["data_state"]["events"]
                                                                           ["vocabularies"]["mcc"]) + 2
    assert all(key.startswith("backbone.") for key in read_state_dict(coles_run / PRETRAINED_WEIGHTS))


def test_fit_pretrain_loads_every_encoder_key_and_reuses_the_vocabularies(coles_run: Path, tmp_path: Path) -> None:
    # Dataset B: other entities, labelled, and a different most-common category: fitting its own vocabulary
    # would order the embedding rows differently from the pretrained ones.
    raw = {
        "name": "b", "output_dir": str(tmp_path / "run_b"), "pretrain": str(coles_run),
        "data": {"train": str(_events(tmp_path / "b" / "train.csv", 40, 5, start=300, labels=True, common="m7")),
                 "val": str(_events(tmp_path / "b" / "val.csv", 16, 6, start=400, labels=True, common="m7")),
                 "batch_size": 8, "events": EVENTS},
        "backbone": {"sequence": {"encoder": "gru", "hidden_size": 16}},
        "optim": {"lr": 1e-2}, "trainer": {"epochs": 1, "seed": 0, "progress_bar": False, "threads": 1},
    }
    cfg = load_config(None, raw=raw)
    exported = read_state_dict(coles_run / PRETRAINED_WEIGHTS)
    model = build_model_for_splits(cfg, load_splits(cfg, 0), verbose=False)
    report = load_pretrained(model, coles_run, verbose=False)
    assert not report.head_loaded and "no head" in report.notes[0]
    keys = report.backbone
    assert (keys.missing, keys.unexpected, keys.shape_mismatched) == ([], [], [])
    assert len(keys.matched) == len(model.backbone.state_dict()) == len(exported)
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, exported[f"backbone.{name}"]), name

    summary = run_fit(cfg, verbose=False).summary
    assert summary["pretrain"]["backbone_keys_missing"] == 0 and not summary["pretrain"]["head_loaded"]
    pretrained = json.loads((coles_run / PRETRAINED_META).read_text())["data_state"]["events"]["vocabularies"]
    finetuned = json.loads((tmp_path / "run_b" / "data_state.json").read_text())["events"]["vocabularies"]
    assert finetuned == pretrained and pretrained["mcc"][0] == "m0"


def test_an_interrupted_coles_run_resumes_to_the_uninterrupted_one(coles_run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = [(["objective", "name"], "coles"), (["output_dir"], str(tmp_path / "again"))]
    assert_pretrain_resumes_exactly(coles_run, coles_run.parent / "coles.yaml", overrides, ColesModule, monkeypatch,
                                    same_losses=False)


def test_unknown_objectives_are_refused_with_the_choices(tmp_path: Path, capsys) -> None:
    assert {"supervised", "coles"} <= set(objective_names())
    raw = _coles_raw(tmp_path, name="colez")
    with pytest.raises(ConfigError, match=r"objective\.name.*'colez'.*attribute_masking, coles, mlm, supervised.*Did you mean 'coles'"):
        load_config(None, raw=raw)
    with pytest.raises(ConfigError, match=r"'simclr' is not a pretraining objective; use one of attribute_masking, coles, mlm, supervised"):
        get_objective("simclr")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_coles_raw(tmp_path)))
    assert main(["pretrain", str(path), "--objective", "simclr"]) == 2
    assert "unknown pretraining objective 'simclr'; choose one of attribute_masking, coles, mlm, supervised" in capsys.readouterr().err
    assert main(["fit", str(path), "--objective", "coles"]) == 2
    assert "fit always trains on the labels" in capsys.readouterr().err


def test_objectives_refuse_what_they_cannot_use(tmp_path: Path) -> None:
    image = load_config(None, raw={**tiny_image_config(tmp_path), "objective": {"name": "coles"}})
    with pytest.raises(ConfigError, match=r"objective 'coles' trains on sequence data.*image"):
        run_pretrain(image, verbose=False)
    unused = load_config(None, raw={**tiny_image_config(tmp_path), "objective": {"split_count": 7}})
    with pytest.raises(ConfigError, match=r"objective\.split_count=7 is set, but objective 'supervised' does not"):
        run_pretrain(unused, verbose=False)
    clash = load_config(None, raw={**_coles_raw(tmp_path, name="coles"), "strategy": {"name": "linear_probe"},
                                   "trainer": {"monitor": "val_auc"}})
    with pytest.raises(ConfigError, match=r"strategy 'linear_probe'.*; trainer\.monitor is 'val_auc'"):
        run_pretrain(clash, verbose=False)
    with pytest.raises(ConfigError, match=r"objective\.max_len \(3\) is below objective\.min_len \(5\)"):
        load_config(None, raw=_coles_raw(tmp_path, name="coles", min_len=5, max_len=3))


def _event_set(lengths: list[int]) -> EventSet:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    columns = {"mcc": np.arange(total, dtype=np.int64) % 5 + 2, "amount": np.arange(total, dtype=np.float32)}
    return EventSet([f"e{i}" for i in range(len(lengths))], offsets, columns, EventFields({"mcc": 7}, ["amount"]))


@pytest.mark.parametrize("sampling", ["random_slices", "random"])
def test_short_histories_are_whole_views_when_kept_and_gone_when_dropped(sampling: str) -> None:
    events = _event_set([1, 2, 9, 12])
    objective = PretrainObjectiveConfig(name="coles", split_count=4, min_len=3, max_len=6, sampling=sampling)
    kept, n_short = select_entities(events, 3, "keep", "train")
    assert kept is events and n_short == 2
    views = ColesViews(kept, make_splitter(objective))
    for index, length in enumerate([1, 2]):  # every view is the whole (short) history
        assert [v["amount"].tolist() for v in views[index]] == [list(range(index, index + length))] * 4
    for index in (2, 3):
        for view in views[index]:
            amounts = view["amount"].tolist()
            assert 3 <= len(amounts) <= 6 and amounts == sorted(amounts)  # time order kept
    dropped, n_short = select_entities(events, 3, "drop", "train")
    assert n_short == 2 and dropped.ids == ["e2", "e3"]
    with pytest.raises(DataError, match=r"fewer than objective\.min_len=10 events.*leaves 1.*short_histories: keep"):
        select_entities(events, 10, "drop", "train")
    padded, entities = collate_views([views[0], views[2]])
    assert entities.tolist() == [0] * 4 + [1] * 4 and padded.payload["mcc"].shape[0] == 8


@pytest.mark.parametrize("loss", ["contrastive", "softmax"])
def test_coles_loss_is_lower_when_views_of_an_entity_agree(loss: str) -> None:
    objective = PretrainObjectiveConfig(name="coles", split_count=3, neg_count=5, loss=loss)
    criterion = ColesLoss(objective)
    entities = torch.arange(2).repeat_interleave(3)  # two entities: 3 negatives per view, neg_count capped
    centres = torch.nn.functional.normalize(torch.randn(2, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    agreeing = criterion(centres[entities], entities)
    scattered = criterion(torch.nn.functional.normalize(torch.randn(6, 8), dim=1), entities)
    assert torch.isfinite(scattered) and agreeing < scattered
    if loss == "contrastive":
        assert criterion.selector.pairs == 2 * 3 + 6 * 3  # positive pairs + 3 hardest negatives per view


def test_fit_pretrain_refuses_other_event_fields(coles_run: Path, tmp_path: Path) -> None:
    """The pretrained embedding tables belong to the pretraining fields: another scaling is refused by name."""
    raw = {
        "output_dir": str(tmp_path / "run_c"), "pretrain": str(coles_run),
        "data": {"train": str(_events(tmp_path / "c" / "train.csv", 40, 5, start=300, labels=True)),
                 "events": {**EVENTS, "numeric": {k: "standardize" for k in EVENTS["numeric"]}}},
        "backbone": {"sequence": {"encoder": "gru", "hidden_size": 16}},
    }
    cfg = load_config(None, raw=raw)
    with pytest.raises(ConfigError, match=r"The pretrained encoder .* was trained on the event fields .*standardize"):
        load_splits(cfg, 0)


def test_hard_negatives_are_ptls_pairs_without_its_n_by_n_by_d_tensor() -> None:
    from ptls.frames.coles.sampling_strategies import HardNegativePairSelector

    from headstart.pretraining.coles import _HardNegatives

    torch.manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    labels = torch.arange(8).repeat_interleave(5)
    ours = _HardNegatives(neg_count=3, split_count=5).get_pairs(embeddings, labels)
    theirs = HardNegativePairSelector(neg_count=3).get_pairs(embeddings, labels)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
