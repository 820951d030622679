"""Masked-language-model pretraining: `headstart pretrain --objective mlm` continues MLM training of a text encoder
on unlabelled text (token / whole-word masking, 80/10/10, seeded masks) and writes an encoder export that
`fit --pretrain` loads with a clean key report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import assert_pretrain_resumes_exactly, tiny_run_config, write_text_csv
from headstart.backbones import HFBackbone
from headstart.config import load_config
from headstart.errors import ConfigError, DataError
from headstart.experiments.fit import run_fit
from headstart.pretraining import objective_names, run_pretrain
from headstart.pretraining.mlm import (
    MaskedDocuments,
    MLMCollator,
    MLMModule,
    TokenizedDocuments,
    count_to_mask,
)
from headstart.train.checkpoint import read_state_dict
from headstart.train.pretrained import PRETRAINED_META, PRETRAINED_WEIGHTS

TRAINER = {"seed": 0, "progress_bar": False, "threads": 1}
CHINESE = ["太慢了，差评", "送餐很快，味道不错", "包装破了，汤都洒了", "服务态度很好，下次还来", "菜是凉的，不推荐",
           "分量足，价格实惠", "等了两个小时", "好吃！五星好评"]
LONG_WORDS = ["tokenization", "unbelievably", "photosynthesis", "microscopically", "reconfiguration",
              "antidisestablishment", "the", "cat", "sat", "on", "mat"]


def _unlabelled_csv(path: Path, n: int, seed: int = 0) -> Path:
    """A text-only csv (no label column): short repetitive sentences an MLM learns quickly."""
    write_text_csv(path, n, seed=seed)
    pd.read_csv(path)[["text"]].to_csv(path, index=False)
    return path


def _mlm_raw(tmp: Path, model_dir: Path, **sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "mlm", "output_dir": str(tmp / "mlm"),
        "data": {"train": str(_unlabelled_csv(tmp / "unlabelled.csv", 96)), "val_fraction": 0.25, "max_length": 16,
                 "batch_size": 16, "eval_batch_size": 32},
        "backbone": {"type": "hf", "name_or_path": str(model_dir)},
        "optim": {"lr": 1e-2, "encoder_lr": 1e-2, "warmup_steps": 0, "weight_decay": 0.0},
        "objective": {"name": "mlm", "mask_rate": 0.3}, "trainer": {"epochs": 4, **TRAINER},
    }
    raw.update(sections)
    return raw


def _documents(model_dir: Path, texts: list[str], whole_word: bool = False, max_length: int = 64):
    tokenizer = HFBackbone(str(model_dir)).load_tokenizer()
    return tokenizer, TokenizedDocuments(texts, tokenizer, max_length, whole_word)


def _masked(tokenizer: Any, docs: TokenizedDocuments, rate: float = 0.15, seed: int = 0) -> MaskedDocuments:
    pool = np.setdiff1d(np.arange(len(tokenizer)), tokenizer.all_special_ids)
    return MaskedDocuments(docs, rate, tokenizer.mask_token_id, pool, seed=seed)


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(LONG_WORDS, size=int(rng.integers(5, 30)))) for _ in range(n)]


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory, tiny_hf_dir: Path) -> Path:
    """`run_pretrain` with objective mlm on 96 unlabelled sentences (a csv without a label column), 4 epochs."""
    tmp = tmp_path_factory.mktemp("mlm")
    raw = _mlm_raw(tmp, tiny_hf_dir)
    (tmp / "mlm.yaml").write_text(yaml.safe_dump(raw))
    run_pretrain(load_config(tmp / "mlm.yaml"), verbose=False)
    return Path(raw["output_dir"])


# ----- masking ------------------------------------------------------------------------------------------------
def test_token_masking_keeps_the_rate_the_80_10_10_split_and_never_touches_specials_or_padding(
        tiny_hf_dir: Path) -> None:
    assert [count_to_mask(n, 0.15) for n in (0, 1, 3, 4, 10, 20, 100)] == [0, 1, 1, 1, 2, 3, 15]
    tokenizer, docs = _documents(tiny_hf_dir, _sentences(400))
    dataset = _masked(tokenizer, docs)
    items = [dataset[i] for i in range(len(dataset))]
    inputs, flat, targets = MLMCollator(tokenizer.pad_token_id)(items)
    ids, attention = inputs["input_ids"].reshape(-1), inputs["attention_mask"].reshape(-1)
    candidates = sum(int((~s).sum()) for s in docs.special)
    assert abs(len(flat) / candidates - 0.15) < 0.01  # the rate, rounded per document
    original = torch.cat([torch.from_numpy(d) for d in docs.ids])
    assert torch.equal(targets, torch.cat([torch.from_numpy(d[p]) for d, (_, p, _) in zip(docs.ids, items,
                                                                                          strict=True)]))
    assert bool((attention[flat] == 1).all())  # never padding
    specials = torch.tensor(tokenizer.all_special_ids)
    assert not bool(torch.isin(targets, specials).any())  # never [CLS] / [SEP] / [UNK]
    assert int(inputs["attention_mask"].sum()) == len(original)
    unpicked = torch.ones_like(ids, dtype=torch.bool)
    unpicked[flat] = False
    kept_ids = ids[unpicked & (attention == 1)]
    assert torch.equal(torch.sort(kept_ids).values,  # every token not picked is unchanged
                       torch.sort(original[~torch.isin(torch.arange(len(original)), _unpadded(flat, items))]).values)
    shown = ids[flat]
    masked = float((shown == tokenizer.mask_token_id).float().mean())
    same = float((shown == targets).float().mean())
    assert abs(masked - 0.8) < 0.03 and abs(same - 0.1) < 0.03 and abs(1 - masked - same - 0.1) < 0.03
    assert not bool(torch.isin(shown[shown != tokenizer.mask_token_id], specials).any())  # random: real tokens


def _unpadded(flat: torch.Tensor, items: list) -> torch.Tensor:
    """Picked positions as indices into the documents' concatenated (unpadded) tokens."""
    width = max(len(ids) for ids, _, _ in items)
    offsets = np.cumsum([0] + [len(ids) for ids, _, _ in items[:-1]])
    rows, cols = flat // width, flat % width
    return torch.from_numpy(offsets)[rows] + cols


def test_whole_word_masking_picks_every_piece_of_a_word_together(tiny_hf_dir: Path) -> None:
    tokenizer, docs = _documents(tiny_hf_dir, _sentences(200, seed=1), whole_word=True)
    assert docs.words is not None
    dataset = _masked(tokenizer, docs, rate=0.2)
    split_words = picked_tokens = candidates = 0
    for i in range(len(dataset)):
        _, positions, _ = dataset[i]
        words = docs.words[i]
        picked = set(words[positions].tolist())
        assert -1 not in picked  # specials carry no word
        for word in picked:  # all of its pieces, or none
            assert set(np.flatnonzero(words == word)) <= set(positions.tolist()), (i, word)
        split_words += sum(int((words == w).sum()) > 1 for w in picked)
        picked_tokens += len(positions)
        candidates += int((~docs.special[i]).sum())
    assert split_words > 50  # words of several pieces were picked whole
    assert 0.15 < picked_tokens / candidates <= 0.21


def test_masks_are_drawn_from_the_seed_epoch_and_document_only(tiny_hf_dir: Path) -> None:
    tokenizer, docs = _documents(tiny_hf_dir, _sentences(20, seed=2))
    a, b = _masked(tokenizer, docs), _masked(tokenizer, docs)
    for key in (3, (3, 0), (3, 5)):
        assert all(np.array_equal(x, y) for x, y in zip(a[key], b[key], strict=True))
    assert not np.array_equal(a[(3, 0)][1], a[(3, 1)][1]) or not np.array_equal(a[(3, 0)][0], a[(3, 1)][0])
    other = _masked(tokenizer, docs, seed=1)
    assert any(not np.array_equal(a[i][0], other[i][0]) for i in range(len(docs)))


def test_the_mlm_loss_trains_and_the_head_is_tied_and_not_exported(tiny_hf_dir: Path) -> None:
    cfg = load_config(None, raw=_mlm_raw(Path("/nonexistent"), tiny_hf_dir, data={"train": "x.csv"}))
    backbone = HFBackbone(str(tiny_hf_dir))
    module = MLMModule(backbone, cfg.optim, seed=0)
    assert module.objective_head.bias.shape[0] == backbone.model.get_input_embeddings().weight.shape[0]
    assert all(not key.startswith("objective_head") for key in module.encoder_state())
    head_params = {id(p) for p in module.objective_head.parameters()}
    assert id(backbone.model.get_input_embeddings().weight) not in head_params  # tied, not owned
    again = MLMModule(HFBackbone(str(tiny_hf_dir)), cfg.optim, seed=0)
    assert torch.equal(module.objective_head.dense.weight, again.objective_head.dense.weight)
    tokenizer, docs = _documents(tiny_hf_dir, ["the cat sat on the mat"] * 32)
    batch = MLMCollator(tokenizer.pad_token_id)([_masked(tokenizer, docs, rate=0.3)[(i, 0)] for i in range(32)])
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        out = module.objective_step(batch, train=True)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss))
    assert out.rows == len(batch[2]) and losses[-1] < 0.5 * losses[0], losses
    module.eval()
    assert set(module.objective_step(batch, train=False).metrics) == {"masked_acc"}


# ----- pretrain and fit --pretrain ----------------------------------------------------------------------------
def test_mlm_pretraining_learns_without_labels_and_writes_an_encoder_export(mlm_run: Path) -> None:
    assert "mlm" in objective_names()
    assert pd.read_csv(mlm_run.parent / "unlabelled.csv").columns.tolist() == ["text"]
    metrics = pd.read_csv(mlm_run / "metrics.csv")
    assert len(metrics) == 4 and metrics["train_loss"].iloc[-1] < 0.8 * metrics["train_loss"].iloc[0], metrics
    for name in ("config.yaml", "checkpoints/best.safetensors", "plots/curves.png", PRETRAINED_WEIGHTS,
                 PRETRAINED_META):
        assert (mlm_run / name).exists(), name
    saved = load_config(mlm_run / "config.yaml")
    assert (saved.objective.name, saved.trainer.monitor, saved.trainer.monitor_mode) == ("mlm", "val_loss", "min")
    summary = json.loads((mlm_run / "summary.json").read_text())
    assert set(summary["val"]) == {"loss", "masked_acc", "perplexity"}
    assert summary["val"]["perplexity"] == pytest.approx(np.exp(summary["val"]["loss"]))
    assert summary["documents"] == {"train": 72, "val": 24} and summary["sources"] == {"data.train": 96}
    assert summary["export_max_abs_diff"] <= 1e-5 and summary["masking"] == "token"
    record = json.loads((mlm_run / PRETRAINED_META).read_text())
    assert record["objective"]["name"] == "mlm" and record["n_classes"] == 0
    exported = read_state_dict(mlm_run / PRETRAINED_WEIGHTS)
    assert exported and all(key.startswith("backbone.") for key in exported)  # the MLM head is not part of it


def test_fit_pretrain_loads_every_encoder_key_of_the_mlm_export(mlm_run: Path, tmp_path: Path,
                                                                tiny_hf_dir: Path) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, pretrain=str(mlm_run), trainer={"epochs": 1, **TRAINER})
    result = run_fit(load_config(None, raw=raw), verbose=False)
    report = result.summary["pretrain"]
    exported = read_state_dict(mlm_run / PRETRAINED_WEIGHTS)
    assert report["backbone_keys_loaded"] == len(exported) > 0 and report["backbone_keys_missing"] == 0


def test_cli_pretrain_mlm_from_text_files_then_fit_pretrain(tmp_path: Path, tiny_hf_dir: Path) -> None:
    lines = tmp_path / "domain.txt"
    lines.write_text("\n".join(_sentences(40, seed=3)) + "\n\n", encoding="utf-8")
    raw = _mlm_raw(tmp_path, tiny_hf_dir, objective={"name": "supervised"}, trainer={"epochs": 1, **TRAINER})
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(raw))
    cli = [sys.executable, "-m", "headstart.cli.main"]
    proc = subprocess.run([*cli, "pretrain", str(path), "--objective", "mlm", "--set", "objective.masking=whole_word",
                           "--set", f"objective.text_files=[{lines}]"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = Path(raw["output_dir"])
    assert f"--pretrain {run}" in proc.stdout and (run / PRETRAINED_WEIGHTS).exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["objective"]["masking"] == "whole_word" and summary["sources"][str(lines)] == 40
    assert sum(summary["documents"].values()) == 96 + 40  # blank lines dropped
    fit_cfg = tmp_path / "fit.yaml"
    fit_cfg.write_text(yaml.safe_dump(tiny_run_config(tmp_path, tiny_hf_dir, trainer={"epochs": 1, **TRAINER})))
    proc = subprocess.run([*cli, "fit", str(fit_cfg), "--pretrain", str(run)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n = len(read_state_dict(run / PRETRAINED_WEIGHTS))
    assert f"Encoder key report: {n} matched, 0 missing, 0 unexpected, 0 shape-mismatched" in proc.stdout


def test_mlm_composes_with_vocabulary_extension_and_fit_pretrain_rebuilds_it(tmp_path: Path,
                                                                            tiny_hf_dir: Path) -> None:
    """TAPT on Chinese text with backbone.extend_vocab: the new tokens' rows train and are exported with the
    vocabulary in the data state; `fit --pretrain` rebuilds that vocabulary and loads every key."""
    texts = pd.DataFrame({"text": [CHINESE[i % len(CHINESE)] for i in range(48)]})
    texts.to_csv(tmp_path / "reviews.csv", index=False)
    raw = _mlm_raw(tmp_path, tiny_hf_dir, trainer={"epochs": 1, **TRAINER})
    raw["data"]["train"] = str(tmp_path / "reviews.csv")
    raw["backbone"]["extend_vocab"] = {"from": "train", "min_freq": 1}
    run = run_pretrain(load_config(None, raw=raw), verbose=False).run_dir
    vocab = json.loads((run / PRETRAINED_META).read_text())["data_state"]["vocab_extension"]
    assert "慢" in vocab["added"]
    exported = read_state_dict(run / PRETRAINED_WEIGHTS)
    rows = exported["backbone.model.embeddings.word_embeddings.weight"].shape[0]
    assert rows == vocab["base_size"] + len(vocab["added"])
    labelled = pd.DataFrame({"text": texts["text"], "label": [i % 2 for i in range(48)]})
    labelled.to_csv(tmp_path / "labelled.csv", index=False)
    fit_raw = tiny_run_config(tmp_path, tiny_hf_dir, pretrain=str(run), trainer={"epochs": 1, **TRAINER})
    fit_raw["data"].update(train=str(tmp_path / "labelled.csv"), val=None, test=None, accept_unk=True)
    fit_raw["output_dir"] = str(tmp_path / "fit")
    report = run_fit(load_config(None, raw=fit_raw), verbose=False).summary["pretrain"]
    assert report["backbone_keys_loaded"] == len(exported) and report["backbone_keys_missing"] == 0


def test_an_interrupted_mlm_run_resumes_to_the_uninterrupted_one(mlm_run: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert_pretrain_resumes_exactly(mlm_run, mlm_run.parent / "mlm.yaml", [(["output_dir"], str(tmp_path / "again"))],
                                    MLMModule, monkeypatch)


# ----- refusals -----------------------------------------------------------------------------------------------
def test_mlm_refuses_what_it_cannot_use(tmp_path: Path, tiny_hf_dir: Path) -> None:
    missing = _mlm_raw(tmp_path, tiny_hf_dir, objective={"name": "mlm", "text_files": [str(tmp_path / "nope.txt")]})
    with pytest.raises(DataError, match=r"objective\.text_files\[0\]: the text file '.*nope\.txt' does not exist"):
        run_pretrain(load_config(None, raw=missing), verbose=False)
    (tmp_path / "blank.csv").write_text("text\n\"\"\n\"  \"\n", encoding="utf-8")
    blank = _mlm_raw(tmp_path, tiny_hf_dir)
    blank["data"]["train"] = str(tmp_path / "blank.csv")
    with pytest.raises(DataError, match=r"objective mlm found no text to train on: every document of data\.train"):
        run_pretrain(load_config(None, raw={**blank, "output_dir": str(tmp_path / "blank")}), verbose=False)
    unread = _mlm_raw(tmp_path, tiny_hf_dir, objective={"name": "mlm", "split_count": 3})
    with pytest.raises(ConfigError, match=r"objective\.split_count=3 is set, but objective 'mlm' does not read it "
                                          r"\(it reads 'mask_rate', 'masking', 'text_files'\)\. Remove it, or pick "
                                          r"the objective it belongs to"):
        run_pretrain(load_config(None, raw=unread), verbose=False)
    supervised = _mlm_raw(tmp_path, tiny_hf_dir, objective={"name": "supervised", "masking": "whole_word"})
    with pytest.raises(ConfigError, match=r"objective\.masking='whole_word' is set, but objective 'supervised'"):
        run_pretrain(load_config(None, raw=supervised), verbose=False)
    events = tmp_path / "events.csv"
    events.write_text("id,t,amount\n1,0,1.0\n1,1,2.0\n2,0,3.0\n", encoding="utf-8")
    sequence = {"name": "seq", "output_dir": str(tmp_path / "seq"), "task": "sequence_classification",
                "data": {"train": str(events), "events": {"id_column": "id", "time_column": "t",
                                                              "numeric": {"amount": "identity"}}},
                "objective": {"name": "mlm"}, "trainer": TRAINER}
    with pytest.raises(ConfigError, match=r"objective 'mlm' trains on text data, but this config's task is "
                                          r"sequence_classification \(sequence data\)"):
        run_pretrain(load_config(None, raw=sequence), verbose=False)
    for path in ("blank", "mlm", "seq"):
        assert not (tmp_path / path / PRETRAINED_WEIGHTS).exists()


def test_a_labelled_training_file_is_split_like_fit_so_its_val_and_test_rows_are_never_trained_on(
        tmp_path: Path, tiny_hf_dir: Path) -> None:
    """Task-adaptive pretraining on the file fit will use: the documents are fit's own carve of the same config."""
    from headstart.modalities import get_modality
    from headstart.pretraining.mlm import load_documents

    raw = tiny_run_config(tmp_path, tiny_hf_dir)
    train = pd.read_csv(raw["data"]["train"])
    pd.concat([train, pd.read_csv(raw["data"]["val"])]).to_csv(tmp_path / "all.csv", index=False)
    raw["data"].update(train=str(tmp_path / "all.csv"), val=None, test=None, val_fraction=0.2, test_fraction=0.25)
    raw["objective"] = {"name": "mlm"}
    cfg = load_config(None, raw=raw)
    docs, _ = load_documents(cfg, 0)
    fit_splits = get_modality(cfg.task).load_splits(cfg, 0)
    assert docs["train"] == fit_splits.train["text"].tolist()
    assert docs["val"] == fit_splits.val["text"].tolist() and docs["test"] == fit_splits.test["text"].tolist()
    assert not set(fit_splits.test["row"]) & set(fit_splits.train["row"])
