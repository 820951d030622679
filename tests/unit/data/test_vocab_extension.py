"""``backbone.extend_vocab``: which tokens are found, the extended tokenizer, how new embedding rows start, the
config, and a run whose extended vocabulary round-trips through its directory (same token ids, same predictions
from `headstart predict` / `embed` in a fresh process)."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import tiny_run_config
from headstart.config import config_to_yaml, load_config
from headstart.data.vocab_extension import extend_tokenizer, find_new_tokens, init_new_embeddings, token_noise
from headstart.errors import ConfigError

CHINESE = ["太慢了，差评", "送餐很快，味道不错", "包装破了，汤都洒了", "服务态度很好，下次还来", "菜是凉的，不推荐",
           "分量足，价格实惠", "等了两个小时", "好吃！五星好评"]
SAMPLES = ["太慢了", "送餐很快", "好吃！五星好评 and english words", "未见过的字"]
CLI = [sys.executable, "-m", "headstart.cli.main"]


@pytest.fixture(scope="module")
def tokenizer(tiny_hf_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_hf_dir))


def _unknown_chars(tokenizer, texts: list[str]) -> set[str]:
    return {ch for text in texts for ch in text if tokenizer.tokenize(ch) == [tokenizer.unk_token]}


def test_chinese_characters_are_found_ranked_and_limited(tokenizer) -> None:
    found = find_new_tokens(tokenizer, CHINESE, min_freq=1, max_new=1000)
    assert set(found) == _unknown_chars(tokenizer, CHINESE)  # single characters: no ## forms, no words
    assert found[:5] == ["了", "好", "很", "评", "两"]  # 4, 3, 2, 2 times (then the string decides), then once
    twice = find_new_tokens(tokenizer, CHINESE, min_freq=2, max_new=1000)
    assert twice == [t for t in found if sum(text.count(t) for text in CHINESE) >= 2]
    assert find_new_tokens(tokenizer, CHINESE, min_freq=1, max_new=3) == found[:3]
    shuffled = CHINESE[::-1]
    random.Random(0).shuffle(shuffled)
    assert find_new_tokens(tokenizer, shuffled, min_freq=1, max_new=1000) == found  # order does not matter


def test_words_of_a_space_separated_script_get_characters_continuations_and_words(tokenizer) -> None:
    found = find_new_tokens(tokenizer, ["ⱥbc xⱥ ⱥbc", "ⱥbc"], min_freq=1, max_new=100)
    assert found == ["ⱥ", "ⱥbc", "##ⱥ", "xⱥ"]  # counts 3, 3, 1, 1; the known word start "x" is not added


def test_the_extended_tokenizer_reads_chinese_and_keeps_old_ids(tokenizer) -> None:
    found = find_new_tokens(tokenizer, CHINESE, min_freq=1, max_new=1000)
    extended = extend_tokenizer(tokenizer, found)
    base = len(tokenizer)
    assert len(extended) == base + len(found)
    ids = extended("太慢了，差评")["input_ids"]
    assert extended.unk_token_id not in ids
    assert extended.convert_ids_to_tokens(ids)[1:-1] == ["太", "慢", "了", "，", "差", "评"]
    assert [extended.convert_tokens_to_ids(t) for t in found] == list(range(base, base + len(found)))
    english = "the delivery was slow, awful"
    assert extended(english)["input_ids"] == tokenizer(english)["input_ids"]


def test_new_embedding_rows_start_from_sub_pieces_or_the_mean_plus_seeded_noise(tokenizer, tiny_hf_dir: Path) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(tiny_hf_dir))
    before = model.get_input_embeddings().weight.detach().clone()
    base = len(tokenizer)
    new = ["xyzzy", "慢", "##慢"]  # xyzzy: known pieces x ##y ##zzy; 慢: nothing known
    init_new_embeddings(model, tokenizer, new, base)
    after = model.get_input_embeddings().weight.detach()
    assert after.shape[0] == base + 3 and model.config.vocab_size == base + 3
    assert torch.equal(after[:base], before)  # old rows unchanged
    pieces = tokenizer.convert_tokens_to_ids(["x", "##y", "##zzy"])
    torch.testing.assert_close(after[base], before[pieces].mean(dim=0))
    # a new character: the mean plus noise of the existing rows' spread, the same in every rebuild, and
    # different for different tokens (identical rows would make every new character the same input)
    std = before.std(dim=0)
    torch.testing.assert_close(after[base + 1], before.mean(dim=0) + token_noise("慢", std))
    torch.testing.assert_close(after[base + 2], before.mean(dim=0) + token_noise("##慢", std))
    assert not torch.allclose(after[base + 1], after[base + 2])
    assert 0.5 < float(((after[base + 1] - before.mean(dim=0)) / std).std()) < 1.5
    again = AutoModel.from_pretrained(str(tiny_hf_dir))
    init_new_embeddings(again, tokenizer, new, base)
    assert torch.equal(again.get_input_embeddings().weight.detach(), after)


def test_tokenizers_other_than_wordpiece_are_refused() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "<unk>": 2}, merges=[], unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>")
    with pytest.raises(ConfigError, match=r"extends WordPiece tokenizers .* is a BPE tokenizer"):
        find_new_tokens(wrapped, ["abc"], what="'m'")


def test_config_from_round_trips_and_errors(tmp_path: Path, tiny_hf_dir: Path) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir)
    (tmp_path / "words.txt").write_text("太慢了\n", encoding="utf-8")
    raw["backbone"]["extend_vocab"] = {"from": "words.txt", "min_freq": 1, "max_new": 50}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    cfg = load_config(path)
    ext = cfg.backbone.extend_vocab
    assert ext is not None and ext.from_ == str(tmp_path / "words.txt") and ext.min_freq == 1
    dumped = yaml.safe_load(config_to_yaml(cfg))["backbone"]["extend_vocab"]
    assert dumped == {"from": str(tmp_path / "words.txt"), "min_freq": 1, "max_new": 50}
    (tmp_path / "again.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
    assert load_config(tmp_path / "again.yaml").backbone.extend_vocab == ext
    raw["backbone"]["extend_vocab"] = {"from": "train"}  # a keyword, not a path
    assert load_config(None, raw=raw).backbone.extend_vocab.from_ == "train"

    raw["backbone"]["extend_vocab"] = {"from": "missing.txt"}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"backbone.extend_vocab.from 'missing.txt' does not exist"):
        load_config(path)
    raw["backbone"] = {"type": "torch", "module": "torch.nn:Identity", "extend_vocab": {"from": "train"}}
    with pytest.raises(ConfigError, match=r"backbone.extend_vocab adds tokens to a Hugging Face tokenizer, so it "
                                          r"needs backbone.type 'hf', not 'torch'"):
        load_config(None, raw=raw)
    raw["backbone"] = {"type": "hf", "extend_vocab": {"from": "train", "min_freq": 0}}
    with pytest.raises(ConfigError, match="min_freq"):
        load_config(None, raw=raw)


def test_a_table_file_as_the_source(tmp_path: Path, tiny_hf_dir: Path) -> None:
    from headstart.modalities import get_modality

    table = tmp_path / "extra.csv"
    pd.DataFrame({"text": ["龙龙", "龙"], "other": ["凤", "凤"]}).to_csv(table, index=False)
    raw = tiny_run_config(tmp_path, tiny_hf_dir)
    raw["backbone"]["extend_vocab"] = {"from": str(table), "min_freq": 1}
    cfg = load_config(None, raw=raw)
    state = get_modality(cfg.task).vocab_state(cfg, ["ignored 凤"])
    assert state == {"vocab_extension": {"added": ["龙"], "base_size": 30522, "source": str(table),
                                         "min_freq": 1, "max_new": 20000}}
    raw["data"]["text_column"] = "nope"
    cfg = load_config(None, raw=raw)
    with pytest.raises(Exception, match=r"backbone.extend_vocab.from '.*extra.csv' has no column 'nope'"):
        get_modality(cfg.task).vocab_state(cfg, [])


def test_the_cache_key_tells_an_extended_backbone_from_the_plain_one(tiny_hf_dir: Path) -> None:
    from headstart.backbones import HFBackbone
    from headstart.data.text import tokenizer_settings

    plain = HFBackbone(str(tiny_hf_dir))
    extended = HFBackbone(str(tiny_hf_dir), added_tokens=["慢"], base_size=30522)
    assert plain.architecture() != extended.architecture()  # vocab_size
    settings = [tokenizer_settings(b.load_tokenizer(), 16, False) for b in (plain, extended)]
    assert settings[0]["tokenizer_digest"] != settings[1]["tokenizer_digest"]
    assert extended.load_tokenizer() is extended.load_tokenizer()  # built once
    with pytest.raises(Exception, match="made for a tokenizer of 100 tokens, but the tokenizer of"):
        HFBackbone(str(tiny_hf_dir), added_tokens=["慢"], base_size=100)


# ----- a run with an extended vocabulary, through the CLI ----------------------------------------------------------
def _write_chinese(path: Path, n: int, shift: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(n):
            w.writerow([CHINESE[(i + shift) % len(CHINESE)], ("neg", "pos")[(i + shift) % 2]])
    return str(path)


def _chinese_raw(tmp_path: Path, tiny_hf_dir: Path, **extend) -> dict:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, trainer={"epochs": 1, "seed": 0, "progress_bar": False,
                                                          "threads": 1})
    data = tmp_path / "data"
    raw["data"].update(train=_write_chinese(data / "zh_train.csv", 48, 0), val=_write_chinese(data / "zh_val.csv", 16, 1),
                       test=_write_chinese(data / "zh_test.csv", 16, 3))
    raw["backbone"]["extend_vocab"] = {"from": "train", "min_freq": 2, **extend}
    return raw


@pytest.fixture(scope="module")
def extended_run(tmp_path_factory: pytest.TempPathFactory, tiny_hf_dir: Path) -> Path:
    """`headstart fit` of the tiny BERT on Chinese text with backbone.extend_vocab (the guard would stop it)."""
    tmp = tmp_path_factory.mktemp("extended")
    cfg = tmp / "zh.yaml"
    cfg.write_text(yaml.safe_dump(_chinese_raw(tmp, tiny_hf_dir), allow_unicode=True), encoding="utf-8")
    done = subprocess.run([*CLI, "fit", str(cfg)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "with 39 added tokens (backbone.extend_vocab;" in done.stdout
    return tmp / "run"


def test_the_run_keeps_its_vocabulary_and_passes_the_guard(extended_run: Path, tiny_hf_dir: Path) -> None:
    state = json.loads((extended_run / "data_state.json").read_text(encoding="utf-8"))["vocab_extension"]
    assert state["base_size"] == 30522 and state["source"] == "train" and state["min_freq"] == 2
    assert len(state["added"]) == 39 and "慢" in state["added"]
    tokenizer = json.loads((extended_run / "summary.json").read_text())["tokenizer"]
    assert tokenizer["unk_rate"] == 0.0 and tokenizer["added_tokens"] == 39
    assert tokenizer["unk_rate_before_extension"] > 0.3  # the guard (5%) would have stopped the plain model
    assert yaml.safe_load((extended_run / "config.yaml").read_text())["backbone"]["extend_vocab"]["from"] == "train"


def test_the_extended_vocabulary_round_trips_through_the_run(extended_run: Path) -> None:
    from transformers import AutoTokenizer

    from headstart.experiments.inference import load_run

    saved = AutoTokenizer.from_pretrained(str(extended_run / "tokenizer"))
    rebuilt = load_run(extended_run, verbose=False).tokenizer
    for text in SAMPLES:
        assert saved(text)["input_ids"] == rebuilt(text)["input_ids"], text
    assert saved.unk_token_id not in saved("太慢了，差评")["input_ids"]
    assert len(saved) == 30522 + 39


def test_predict_and_embed_reproduce_the_run_in_a_fresh_process(extended_run: Path, tmp_path: Path) -> None:
    test_file = yaml.safe_load((extended_run / "config.yaml").read_text(encoding="utf-8"))["data"]["test"]
    preds, emb = tmp_path / "p.csv", tmp_path / "e.parquet"
    for command, out in (("predict", preds), ("embed", emb)):
        done = subprocess.run([*CLI, command, str(extended_run), "--data", test_file, "--output", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    saved = np.load(extended_run / "predictions" / "test.npz")
    frame = pd.read_csv(preds).set_index("row").loc[saved["row"]]
    np.testing.assert_allclose(frame[["proba_neg", "proba_pos"]].to_numpy(), saved["proba"], atol=1e-5)
    table = pd.read_parquet(emb)
    assert len(table) == 16 and len(table["embedding"].iloc[0]) == 16


def test_fit_from_a_pretrained_export_adopts_its_vocabulary(extended_run: Path, tmp_path: Path,
                                                            tiny_hf_dir: Path, capsys) -> None:
    from headstart.experiments.fit import run_fit

    source = load_config(extended_run / "config.yaml")
    source = source.model_copy(update={"output_dir": str(tmp_path / "export")})
    export = Path(run_fit(source, export_pretrained=True, verbose=False).summary["pretrained_export"])
    raw = _chinese_raw(tmp_path / "b", tiny_hf_dir, min_freq=1)  # would add more tokens on its own
    raw["pretrain"] = str(export)
    result = run_fit(load_config(None, raw=raw), verbose=False)
    assert "using the vocabulary of the pretrained encoder" in capsys.readouterr().out
    adopted = json.loads((result.run_dir / "data_state.json").read_text(encoding="utf-8"))
    original = json.loads((extended_run / "data_state.json").read_text(encoding="utf-8"))
    assert adopted == original
    assert result.summary["pretrain"]["backbone_keys_missing"] == 0


def test_a_siamese_backbone_shares_the_extended_encoder(tmp_path: Path, tiny_hf_dir: Path) -> None:
    from headstart.backbones import SiameseBackbone
    from headstart.modalities import get_modality

    raw = tiny_run_config(tmp_path, tiny_hf_dir)
    raw["backbone"].update(pair="siamese", extend_vocab={"from": "train", "min_freq": 1})
    cfg = load_config(None, raw=raw)
    modality = get_modality(cfg.task)
    state = modality.vocab_state(cfg, CHINESE)
    backbone = modality.build_backbone(cfg, state)
    assert isinstance(backbone, SiameseBackbone)
    assert backbone.encoder.added_tokens == state["vocab_extension"]["added"]
    assert backbone.load_tokenizer().unk_token_id not in backbone.load_tokenizer()("太慢了")["input_ids"]
    assert modality.vocab_state(cfg.model_copy(update={"backbone": cfg.backbone.model_copy(
        update={"extend_vocab": None})}), CHINESE) is None
