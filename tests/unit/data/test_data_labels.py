from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from headstart.data.labels import LabelMap
from headstart.errors import DataError


def test_numeric_labels_sort_numerically_and_stay_ints() -> None:
    label_map = LabelMap.from_labels(np.array([10, 2, 1, 2, 10]))
    assert label_map.classes == [1, 2, 10]
    assert all(type(c) is int for c in label_map.classes)
    assert label_map.n_classes == 3


def test_string_labels_sort_lexicographically() -> None:
    assert LabelMap.from_labels(["neg", "pos", "Neutral", "neg"]).classes == ["Neutral", "neg", "pos"]


def test_whole_floats_match_int_classes() -> None:
    label_map = LabelMap.from_labels(pd.Series([0, 1, 1]))
    encoded = label_map.encode(pd.Series([1.0, 0.0, 1.0]))
    assert encoded.dtype == np.int64
    assert encoded.tolist() == [1, 0, 1]
    assert LabelMap.from_labels([0.5, 1.0]).classes == [0.5, 1]


def test_nan_labels_are_reported_with_rows() -> None:
    with pytest.raises(DataError) as info:
        LabelMap.from_labels(pd.Series([1, None, 0, np.nan]), where="data.train (t.csv), column 'label'")
    message = str(info.value)
    assert "data.train (t.csv), column 'label'" in message
    assert "2 rows with an empty label" in message and "data rows 2, 4" in message
    assert "Clean the file" in message


def test_blank_string_label_is_missing_and_rows_map_to_file_rows() -> None:
    with pytest.raises(DataError, match="data row 8,"):
        LabelMap.from_labels(["a", " ", "b"], rows=[3, 7, 9])


def test_encode_unknown_labels_lists_values_counts_and_fix() -> None:
    label_map = LabelMap.from_labels(["neg", "pos"])
    with pytest.raises(DataError) as info:
        label_map.encode(["pos", "mixed", "mixed", "other"], where="data.val (v.csv), column 'label'")
    message = str(info.value)
    assert "'mixed' (2 rows)" in message and "'other' (1 row)" in message
    assert "Known classes: 'neg', 'pos'" in message
    assert "add rows with those labels to the training data" in message and "drop those rows" in message
    assert "data.val (v.csv)" in message


def test_encode_nan_label_is_error() -> None:
    with pytest.raises(DataError, match="1 row with an empty label"):
        LabelMap.from_labels([0, 1]).encode([0.0, np.nan, 1.0])


def test_string_vs_int_mismatch_is_pointed_out() -> None:
    with pytest.raises(DataError, match="'1' is a str but the training class 1 is a int"):
        LabelMap.from_labels([0, 1]).encode(["1"])


def test_unsupported_label_type() -> None:
    with pytest.raises(DataError, match="numbers or strings"):
        LabelMap.from_labels([[1, 2], [3]])


def test_decode_accepts_lists_arrays_and_tensors() -> None:
    label_map = LabelMap(["neg", "pos"])
    assert label_map.decode([1, 0]) == ["pos", "neg"]
    assert label_map.decode(np.array([0])) == ["neg"]
    assert label_map.decode(torch.tensor([1, 1])) == ["pos", "pos"]
    with pytest.raises(DataError, match="has 2 classes"):
        label_map.decode([2])


def test_json_round_trip_keeps_types(tmp_path: Path) -> None:
    for classes in ([0, 1, 5], ["b", "a c", "酒店"], [0.5, 2]):
        path = tmp_path / "run" / "label_map.json"
        LabelMap(classes).to_json(path)
        assert json.loads(path.read_text(encoding="utf-8")) == {"classes": classes}
        loaded = LabelMap.from_json(path)
        assert loaded == LabelMap(classes)
        assert [type(c) for c in loaded.classes] == [type(c) for c in classes]
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["label_map.json"]


def test_from_json_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        LabelMap.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot be read"):
        LabelMap.from_json(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text('{"labels": [0, 1]}')
    with pytest.raises(DataError, match="no 'classes' list"):
        LabelMap.from_json(tmp_path / "wrong.json")
