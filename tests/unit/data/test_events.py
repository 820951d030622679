"""Event sequences: ordering, truncation, vocabularies from train only, per-entity splits, labels, errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ptls.data_load.padded_batch import PaddedBatch

from headstart.config import DataConfig
from headstart.data.event_tables import NA_CATEGORY, EventTable, read_event_table
from headstart.data.events import (
    OOV_INDEX,
    TIME_DELTA_FIELD,
    EventEncoders,
    EventSet,
    collate_events,
    load_event_splits,
    read_events,
)
from headstart.errors import ConfigError, DataError

FIXTURE = Path(__file__).parents[3].parent / "shared" / "data" / "age_pred_ptls_fixture"


def _csv(path: Path, header: str, rows: list[tuple[Any, ...]]) -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _data(train: Path, **kwargs: Any) -> DataConfig:
    events = {"id_column": "client", "time_column": "day", "categorical": ["mcc"], "numeric": {"amount": "identity"},
              **kwargs.pop("events", {})}
    return DataConfig(train=str(train), events=events, **kwargs)


def _population(n_entities: int = 40, n_events: int = 4, seed: int = 0) -> list[tuple[Any, ...]]:
    """Entities c0..c{n-1} with a label in the events table (class 'a' for even ids), rows shuffled."""
    rng = np.random.default_rng(seed)
    rows = [(f"c{e}", day, f"m{(e + day) % 5}", float(day + 1), "a" if e % 2 == 0 else "b")
            for e in range(n_entities) for day in range(n_events)]
    return [rows[i] for i in rng.permutation(len(rows))]


HEADER = "client,day,mcc,amount,label"


def test_events_come_back_in_time_order_with_ties_in_file_order(tmp_path: Path) -> None:
    # 'pos' is the expected position; days are shuffled and day 2 occurs twice (file order decides).
    rows = [("x", 5, "m", 4), ("x", 2, "m", 1), ("y", 1, "m", 0), ("x", 0, "m", 0), ("x", 2, "m", 2),
            ("x", 3, "m", 3), ("y", 0, "m", 9)]
    train = _csv(tmp_path / "t.csv", "client,day,mcc,pos", rows)
    data = _data(train, events={"numeric": {"pos": "identity"}})
    encoders = EventEncoders.fit(_table(data), data.events)
    item = read_events(data, train, encoders, labelled=False)[0]
    assert item["id"] == "x" and item["label"] is None
    assert item["events"]["pos"].tolist() == [0, 1, 2, 3, 4]
    assert item["events"][TIME_DELTA_FIELD].tolist() == [0, 2, 0, 1, 2]
    assert item["events"]["pos"].dtype == torch.float32 and item["events"]["mcc"].dtype == torch.long


def test_truncation_keeps_the_latest_events_and_their_real_deltas(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [("x", day * 2, f"m{day}", day) for day in range(10)][::-1]
    train = _csv(tmp_path / "t.csv", "client,day,mcc,amount", rows)
    data = _data(train, events={"max_events": 3})
    with caplog.at_level(logging.INFO, logger="headstart"):
        table = _table(data)
    assert "1 of 1 entities have more than data.events.max_events=3" in caplog.text
    item = EventSet(table.ids, table.offsets, EventEncoders.fit(table, data.events).encode(table),
                    EventEncoders.fit(table, data.events).fields)[0]
    assert item["events"]["amount"].tolist() == [7, 8, 9]
    assert item["events"][TIME_DELTA_FIELD].tolist() == [2, 2, 2]  # the first kept event's gap is real


def test_vocabulary_comes_from_train_only_and_unseen_values_are_oov(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", HEADER, [r for r in _population() if r[0] != "c1"])
    val = _csv(tmp_path / "val.csv", HEADER, [("v1", 0, "m1", 1.0, "a"), ("v1", 1, "only_in_val", 2.0, "a"),
                                             ("v2", 0, "m2", 1.0, "b"), ("v2", 1, "", 1.0, "b")])
    splits = load_event_splits(_data(train, val=str(val)), seed=0)
    vocab = splits.encoders.vocabularies["mcc"]
    assert "only_in_val" not in vocab and NA_CATEGORY not in vocab
    assert splits.encoders.fields.categorical == {"mcc": len(vocab) + 2}
    first = splits.val[0]["events"]["mcc"].tolist()
    assert first == [vocab.index("m1") + 2, OOV_INDEX]
    assert splits.val[1]["events"]["mcc"].tolist()[1] == OOV_INDEX  # empty cell -> '<NA>', unseen in train


def test_empty_categorical_cells_are_a_category_of_their_own(tmp_path: Path) -> None:
    rows = [(f"c{e}", d, "" if d == 0 else "m", 1.0, "ab"[e % 2]) for e in range(10) for d in range(2)]
    splits = load_event_splits(_data(_csv(tmp_path / "t.csv", HEADER, rows), val_fraction=0.2), seed=0)
    assert sorted(splits.encoders.vocabularies["mcc"]) == sorted([NA_CATEGORY, "m"])


def test_splits_are_per_entity_stratified_and_seeded(tmp_path: Path) -> None:
    train = _csv(tmp_path / "t.csv", HEADER, _population(n_entities=40))
    data = _data(train, val_fraction=0.2, test_fraction=0.1)
    first, again, other = (load_event_splits(data, seed=s) for s in (3, 3, 4))
    ids = {name: set(getattr(first, name).ids) for name in ("train", "val", "test")}
    assert (len(ids["train"]), len(ids["val"]), len(ids["test"])) == (28, 8, 4)
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert np.bincount(first.val.labels).tolist() == [4, 4] and np.bincount(first.test.labels).tolist() == [2, 2]
    assert first.val.ids == again.val.ids and first.test.ids == again.test.ids
    assert first.encoders == again.encoders and first.train.fingerprint() == again.train.fingerprint()
    assert first.train.preprocessing["categorical"] == first.encoders.fields.categorical
    assert [first.train[i]["events"]["mcc"].tolist() for i in range(5)] == \
        [again.train[i]["events"]["mcc"].tolist() for i in range(5)]
    assert set(first.val.ids) != set(other.val.ids)
    subset = load_event_splits(_data(train, val_fraction=0.2, train_subset=10), seed=3)
    assert len(subset.train) == 10 and np.bincount(subset.train.labels).tolist() == [5, 5]


def test_labels_from_a_table_match_labels_from_the_events_column(tmp_path: Path) -> None:
    rows = _population(n_entities=20)
    from_column = load_event_splits(_data(_csv(tmp_path / "a.csv", HEADER, rows), val_fraction=0.2), seed=1)
    events = _csv(tmp_path / "b.csv", "client,day,mcc,amount", [r[:4] for r in rows])
    labels = _csv(tmp_path / "labels.csv", "client,target", [(f"c{e}", "ab"[e % 2]) for e in range(20)])
    from_table = load_event_splits(_data(events, val_fraction=0.2, label_column="target",
                                         events={"labels": str(labels)}), seed=1)
    assert from_table.label_map.classes == from_column.label_map.classes == ["a", "b"]
    assert from_table.val.ids == from_column.val.ids
    assert from_table.train.labels.tolist() == from_column.train.labels.tolist()


def test_a_label_that_changes_within_an_entity_is_refused_with_its_id(tmp_path: Path) -> None:
    rows = [*_population(n_entities=6), ("c3", 9, "m", 1.0, "a")]  # c3 is 'b' on its other events
    with pytest.raises(DataError, match=r"changes within 1 entity \('c3': 'b', 'a'|changes within 1 entity \('c3': 'a', 'b'"):
        load_event_splits(_data(_csv(tmp_path / "t.csv", HEADER, rows)), seed=0)


def test_unmatched_entities_are_dropped_with_a_log_line_or_refused(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    events = _csv(tmp_path / "e.csv", "client,day,mcc,amount", [r[:4] for r in _population(n_entities=20)])
    table = [(f"c{e}", "ab"[e % 2]) for e in range(2, 20)] + [("ghost1", "a"), ("ghost2", "b"), ("ghost3", "a")]
    labels = _csv(tmp_path / "labels.csv", "client,label", table)
    data = _data(events, val_fraction=0.25, events={"labels": str(labels)})
    with caplog.at_level(logging.INFO, logger="headstart"):
        splits = load_event_splits(data, seed=0)
    assert len(splits.train) + len(splits.val) == 18
    assert "data.events.unmatched=drop: dropped 2 entities with events but no row in the label table" in caplog.text
    assert "3 labelled entities with no events" in caplog.text and "'ghost1'" in caplog.text
    strict = _data(events, events={"labels": str(labels), "unmatched": "error"})
    with pytest.raises(DataError) as info:
        load_event_splits(strict, seed=0)
    message = str(info.value)
    assert "2 entities with events but no row in the label table (data.train: 2; e.g. " in message
    assert "'c0'" in message and "3 labelled entities with no events" in message
    assert "data.events.unmatched: drop" in message


def test_a_label_table_with_duplicate_ids_is_refused(tmp_path: Path) -> None:
    events = _csv(tmp_path / "e.csv", "client,day,mcc,amount", [r[:4] for r in _population(n_entities=6)])
    labels = _csv(tmp_path / "labels.csv", "client,label", [(f"c{e}", "ab"[e % 2]) for e in range(6)] + [("c4", "b")])
    with pytest.raises(DataError, match=r"1 entity id\(s\) appear more than once .*'c4' at lines 6, 8 \(line 1 is the header\)"):
        load_event_splits(_data(events, events={"labels": str(labels)}), seed=0)


def test_ids_match_across_formats_and_an_empty_file_is_refused(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"client": [7, 7, 8, 8, 9, 9, 10, 10], "day": pd.to_datetime(["2024-01-02", "2024-01-01"] * 4),
                          "mcc": [5.0, np.nan, 5.0, 6.0, 5.0, 5.0, 6.0, 6.0], "amount": [1.0] * 8})
    frame.to_parquet(tmp_path / "events.parquet")
    labels = _csv(tmp_path / "labels.csv", "client,label", [(7, "a"), (8, "b"), (9, "a"), (10, "b")])
    data = _data(tmp_path / "events.parquet", val_fraction=0.5, events={"labels": str(labels), "unmatched": "error"})
    splits = load_event_splits(data, seed=0)
    assert sorted(splits.train.ids + splits.val.ids) == ["10", "7", "8", "9"]  # parquet ints match csv text
    assert set(splits.encoders.vocabularies["mcc"]) <= {"5", "6", NA_CATEGORY}  # whole floats lose their '.0'
    assert splits.encoders.time_format == "datetime"
    empty = tmp_path / "empty.csv"
    empty.write_text("client,day,mcc,amount\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data.train: '.*empty.csv' has no data rows"):
        load_event_splits(_data(empty), seed=0)


def test_val_file_sharing_entities_with_train_is_refused(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", HEADER, _population(n_entities=10))
    val = _csv(tmp_path / "val.csv", HEADER, [("c1", 0, "m", 1.0, "b"), ("c2", 0, "m", 1.0, "a"), ("z", 0, "m", 1, "b")])
    with pytest.raises(DataError, match=r"data.train .* and data.val .* share 2 entities \(e.g. 'c1', 'c2'\)"):
        load_event_splits(_data(train, val=str(val)), seed=0)


def test_unparseable_times_name_the_file_lines_and_values(tmp_path: Path) -> None:
    rows = [("x", "2024-01-05", "m", 1), ("x", "2024-01-07 10:30:00", "m", 1), ("x", "yesterday", "m", 1),
            ("y", "2024-02-30", "m", 1), ("y", "", "m", 1)]
    train = _csv(tmp_path / "t.csv", "client,day,mcc,amount", rows)
    with pytest.raises(DataError) as info:
        _table(_data(train))
    message = str(info.value)
    assert "3 value(s) of the time column 'day' (data.events.time_column) cannot be read as dates" in message
    assert "at lines 4, 5, 6 (line 1 is the header): 'yesterday', '2024-02-30', (empty)" in message
    assert str(train) in message and "time_format" in message
    numbers = _csv(tmp_path / "n.csv", "client,day,mcc,amount", [("x", 1, "m", 1), ("x", "1o", "m", 1), ("x", 3, "m", 1)])
    with pytest.raises(DataError, match=r"cannot be read as numbers \(time_format auto chose number.*line 3 .*'1o'"):
        _table(_data(numbers))


def test_dates_give_deltas_in_days(tmp_path: Path) -> None:
    rows = [("x", "2024-01-05", "m", 1), ("x", "2024-01-01 12:00:00", "m", 1), ("x", "2024-03-01", "m", 1)]
    train = _csv(tmp_path / "t.csv", "client,day,mcc,amount", rows)
    table = _table(_data(train))
    assert table.time_format == "datetime" and table.delta.tolist() == [0, 3.5, 56]
    date = _table(_data(train, events={"time_format": "date"}))
    assert date.delta.tolist() == [0, 4, 56]


def test_missing_columns_are_listed_with_a_did_you_mean(tmp_path: Path) -> None:
    train = _csv(tmp_path / "t.csv", "client,trans_date,mcc_code,amount", [("x", 1, "m", 1)])
    with pytest.raises(DataError) as info:
        _table(_data(train, events={"time_column": "trans_dat"}))
    message = str(info.value)
    assert "no column 'trans_dat' (data.events.time_column) and no column 'mcc' (data.events.categorical)" in message
    assert "Did you mean 'trans_date'?" in message and "Available columns: 'client', 'trans_date'" in message


def test_missing_numbers_are_an_error_naming_the_lines(tmp_path: Path) -> None:
    train = _csv(tmp_path / "t.csv", "client,day,mcc,amount", [("x", 1, "m", 1), ("x", 2, "m", ""), ("x", 3, "m", "n/a")])
    with pytest.raises(DataError, match=r"'amount' .* 2 value\(s\) that are not finite numbers, at lines 3, 4 "
                                        r"\(line 1 is the header\): \(empty\), 'n/a'"):
        _table(_data(train))


def test_log1p_and_standardize_match_numpy(tmp_path: Path) -> None:
    rows = _population(n_entities=20)
    rows = [(r[0], r[1], r[2], r[3] * 10.5, r[3] - 2.0, r[4]) for r in rows]
    train = _csv(tmp_path / "t.csv", "client,day,mcc,amount,balance,label", rows)
    splits = load_event_splits(_data(train, val_fraction=0.2, events={"numeric": {"amount": "log1p",
                                                                                  "balance": "standardize"}}), seed=0)
    raw = {r[0]: r for r in rows}
    train_ids = set(splits.train.ids)
    balances = np.array([r[4] for r in rows if r[0] in train_ids])
    mean, std = balances.mean(), balances.std()
    assert splits.encoders.numeric["balance"].mean == pytest.approx(mean)
    assert splits.encoders.numeric["balance"].std == pytest.approx(std)
    for i in range(3):
        item = splits.val[i]
        days = sorted(r for r in rows if r[0] == item["id"])
        assert raw[item["id"]][0] == item["id"]
        np.testing.assert_allclose(item["events"]["amount"].numpy(), np.log1p([r[3] for r in days]), rtol=1e-6)
        np.testing.assert_allclose(item["events"]["balance"].numpy(), (np.array([r[4] for r in days]) - mean) / std,
                                   rtol=1e-5)
    bad = _csv(tmp_path / "neg.csv", "client,day,mcc,amount", [("x", 1, "m", 3.0), ("x", 2, "m", -5.0)])
    data = _data(bad, events={"numeric": {"amount": "log1p"}})
    with pytest.raises(DataError, match=r"log1p .* needs values above -1, but 1 event\(s\) have -5 at line 3"):
        EventEncoders.fit(_table(data), data.events).encode(_table(data))


def test_collate_pads_with_zeros_into_a_padded_batch(tmp_path: Path) -> None:
    rows = [("x", d, f"m{d}", d + 1.0, "a") for d in range(3)] + [("y", 0, "m9", 5.0, "b")]
    train = _csv(tmp_path / "t.csv", HEADER, rows)
    data = _data(train)
    table = _table(data, label_column="label")
    encoders = EventEncoders.fit(table, data.events)
    dataset = EventSet(table.ids, table.offsets, encoders.encode(table), encoders.fields, np.array([0, 1]))
    assert dataset.lengths.tolist() == [3, 1]
    batch, labels = collate_events([dataset[0], dataset[1]])
    assert isinstance(batch, PaddedBatch)
    assert batch.seq_lens.tolist() == [3, 1] and labels.tolist() == [0, 1]
    assert set(batch.payload) == {"mcc", "amount", TIME_DELTA_FIELD}
    assert batch.payload["mcc"].shape == (2, 3) and batch.payload["mcc"].dtype == torch.long
    assert batch.payload["mcc"][1, 1:].tolist() == [0, 0] and batch.payload["amount"][1].tolist() == [5, 0, 0]
    assert min(batch.payload["mcc"][0].tolist()) >= 2  # every training value has a real index
    unlabelled = EventSet(table.ids, table.offsets, encoders.encode(table), encoders.fields)
    batch, labels = collate_events([unlabelled[1], unlabelled[0]])
    assert labels is None and batch.seq_lens.tolist() == [1, 3]


def test_encoders_round_trip_and_read_a_new_file(tmp_path: Path) -> None:
    train = _csv(tmp_path / "t.csv", HEADER, _population(n_entities=20))
    data = _data(train, val_fraction=0.2, events={"numeric": {"amount": "standardize"}})
    splits = load_event_splits(data, seed=0)
    path = tmp_path / "encoders.json"
    splits.encoders.to_json(path)
    restored = EventEncoders.from_json(path)
    assert restored == splits.encoders and restored.fields == splits.encoders.fields
    assert json.loads(path.read_text())["time_format"] == "number"
    new = _csv(tmp_path / "new.csv", HEADER, [("n1", 2, "m0", 3.0, "b"), ("n1", 1, "never_seen", 1.0, "b"),
                                              ("n2", 0, "m1", 2.0, "a")])
    labelled = read_events(data, new, restored, labelled=True, label_map=splits.label_map, where="evaluate")
    assert labelled.ids == ["n1", "n2"] and labelled.labels.tolist() == [1, 0]
    assert labelled[0]["events"]["mcc"].tolist() == [OOV_INDEX, restored.vocabularies["mcc"].index("m0") + 2]
    mean, std = restored.numeric["amount"].mean, restored.numeric["amount"].std
    np.testing.assert_allclose(labelled[0]["events"]["amount"].numpy(), (np.array([1.0, 3.0]) - mean) / std, rtol=1e-6)
    unlabelled = read_events(data, _csv(tmp_path / "p.csv", "client,day,mcc,amount", [("n3", 0, "m0", 1)]),
                             restored, labelled=False)
    assert unlabelled.labels is None and unlabelled[0]["label"] is None
    with pytest.raises(DataError, match=r"evaluate .* has no column 'amount' .* The run was trained with"):
        read_events(data, _csv(tmp_path / "q.csv", "client,day,mcc", [("n3", 0, "m0")]), restored, labelled=False,
                    where="evaluate")
    with pytest.raises(DataError, match=r"expected 'headstart\.events/1'"):
        EventEncoders.from_dict({"format": "other"})
    with pytest.raises(ConfigError, match="given no label_map"):
        read_events(data, new, restored, labelled=True)


def test_age_pred_fixture(caplog: pytest.LogCaptureFixture) -> None:
    if not (FIXTURE / "age-transactions.csv").exists():
        pytest.skip(f"shared fixture absent: {FIXTURE}")
    data = DataConfig(train=str(FIXTURE / "age-transactions.csv"), label_column="bins", val_fraction=0.2,
                      events={"id_column": "client_id", "time_column": "trans_date", "categorical": ["small_group"],
                              "numeric": {"amount_rur": "standardize"}, "labels": str(FIXTURE / "age-bin.csv"),
                              "unmatched": "error"})
    splits = load_event_splits(data, seed=0)
    assert (len(splits.train), len(splits.val)) == (80, 20) and splits.label_map.classes == [0, 1, 2, 3]
    assert set(splits.train.lengths.tolist()) == {10} and not set(splits.train.ids) & set(splits.val.ids)
    assert np.bincount(splits.train.labels).sum() == 80 and len(np.unique(splits.val.labels)) == 4
    batch, labels = collate_events([splits.train[i] for i in range(4)])
    assert batch.payload["small_group"].shape == (4, 10) and labels.shape == (4,)
    times = batch.payload[TIME_DELTA_FIELD]
    assert (times >= 0).all() and (times[:, 0] == 0).all()


def _table(data: DataConfig, label_column: str | None = None) -> EventTable:
    events = data.events
    return read_event_table(data.train, where="data.train", id_column=events.id_column,
                            time_column=events.time_column, categorical=events.categorical,
                            numeric=list(events.numeric), max_events=events.max_events,
                            time_format=events.time_format, label_column=label_column)
