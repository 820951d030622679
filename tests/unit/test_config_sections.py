"""The strategy and data sections are checked when the config loads, before any data is read or model built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from headstart.config import load_config
from headstart.errors import ConfigError


def _problems(tmp_path: Path, **sections: Any) -> str:
    raw = {**sections, "data": {"train": "train.csv", **sections.get("data", {})}}
    (tmp_path / "train.csv").write_text("text,label\na,0\nb,1\n", encoding="utf-8")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"Invalid config '{path}': 1 problem(s):") and "Fix these keys" in message
    return message


@pytest.mark.parametrize(("freeze", "facts"), [
    ("5-2", ["- 'strategy.freeze': Block range '5-2' (strategy.freeze) is reversed: start 5 > end 2", "write '2-5'",
             "(got '5-2')"]),
    ("0-2,4-3", ["is reversed in '4-3'", "write '0-2,3-4'"]),
    (-1, ["contains the negative index '-1'", "numbered from 0", "strategy.train_last", "(got -1)"]),
    ("0--2", ["'0--2' is neither a block index nor a range"]),
    ("a-b", ["Block range 'a-b' (strategy.freeze) is not understood", "'0-3'"]),
])
def test_bad_block_range_fails_at_load(tmp_path: Path, freeze: object, facts: list[str]) -> None:
    message = _problems(tmp_path, strategy={"name": "partial", "freeze": freeze})
    for fact in facts:
        assert fact in message, (fact, message)


def test_valid_ranges_load() -> None:
    for freeze, stored in [("0-2,5", "0-2,5"), (3, "3"), ("2-2", "2-2")]:
        cfg = load_config(None, raw={"data": {"train": "x.csv"}, "strategy": {"name": "partial", "freeze": freeze}})
        assert cfg.strategy.freeze == stored


@pytest.mark.parametrize(("strategy", "facts"), [
    ({"name": "partial"}, ["strategy 'partial' needs exactly one of strategy.freeze", "but neither is set",
                           "--strategy partial:2"]),
    ({"name": "partial", "freeze": "0-1", "train_last": 1}, ["but both are set (freeze '0-1', train_last 1)"]),
    ({"name": "gradual", "freeze_epochs": 0}, ["strategy 'gradual' needs strategy.freeze_epochs >= 1 (got 0)",
                                               "use 'full'"]),
    ({"name": "gradual", "unfreeze_every": 2}, ["strategy.freeze_epochs >= 1 (unset, so 0)"]),
])
def test_strategy_fields_that_do_not_fit_the_name(tmp_path: Path, strategy: dict, facts: list[str]) -> None:
    message = _problems(tmp_path, strategy=strategy)
    assert "- 'strategy': " in message
    for fact in facts:
        assert fact in message, (fact, message)


@pytest.mark.parametrize(("data", "where", "facts"), [
    ({"text_column": "label"}, "data.label_column",
     ["data.text_column and data.label_column are both 'label'", "set data.text_column to the column holding the "
      "texts and data.label_column to the one holding the labels", "(got 'label')"]),
    ({"text_column": "review", "label_column": "review"}, "data.label_column",
     ["data.text_column and data.label_column are both 'review'"]),
    ({"text_pair_column": "text"}, "data.text_pair_column",
     ["data.text_column and data.text_pair_column are both 'text'", "second texts of the pairs"]),
    ({"text_pair_column": "label"}, "data.label_column",
     ["data.text_pair_column and data.label_column are both 'label'"]),
])
def test_one_column_in_two_roles_is_a_config_error(tmp_path: Path, data: dict, where: str, facts: list[str]) -> None:
    message = _problems(tmp_path, data=data)
    assert f"- '{where}': " in message
    for fact in facts:
        assert fact in message, (fact, message)


def test_distinct_columns_load() -> None:
    cfg = load_config(None, raw={"data": {"train": "x.csv", "text_column": "q1", "text_pair_column": "q2",
                                          "label_column": "y"}})
    assert (cfg.data.text_column, cfg.data.text_pair_column, cfg.data.label_column) == ("q1", "q2", "y")
