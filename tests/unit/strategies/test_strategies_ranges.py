"""Block-range specs (strategy.freeze, --strategy partial:...): each malformed form gets its own message."""

from __future__ import annotations

import pytest

from headstart import LayerMapError, Strategy
from headstart.errors import ConfigError
from headstart.strategies import check_block_range, parse_block_range, parse_strategy_spec

NAMES = ["embeddings", "encoder.layer.0", "encoder.layer.1"]


def _message(call, *args, error: type[Exception] = ConfigError) -> str:
    with pytest.raises(error) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("call", [parse_strategy_spec, lambda spec: Strategy("partial", freeze=spec[8:])])
def test_reversed_range_says_reversed_and_gives_the_fix(call) -> None:
    message = _message(call, "partial:5-2")
    assert "'5-2'" in message and "strategy.freeze" in message and "is reversed: start 5 > end 2" in message
    assert "write '2-5'" in message and "--strategy partial:2-5" in message and "out of bounds" not in message


def test_reversed_part_of_a_list_is_named_and_fixed_in_place() -> None:
    message = _message(check_block_range, "0-2,5-3")
    assert "is reversed in '5-3': start 5 > end 3" in message and "write '0-2,3-5'" in message


def test_letters_are_not_a_range() -> None:
    message = _message(parse_strategy_spec, "partial:a-b")
    assert "'a-b'" in message and "is not understood" in message and "neither a block index nor a range" in message
    assert "'0-3'" in message and "headstart inspect" in message


def test_negative_index_explains_numbering_and_train_last() -> None:
    message = _message(parse_strategy_spec, "partial:-1")
    assert "negative index '-1'" in message and "numbered from 0" in message
    assert "strategy.train_last" in message and "partial:1" in message


@pytest.mark.parametrize("spec", ["0-2,,5", ",", "0-2,"])
def test_empty_part(spec: str) -> None:
    assert "has an empty part" in _message(check_block_range, spec)


def test_single_block_range_is_valid() -> None:
    """'2-2' is the one-block range, the same as '2' (ranges include both ends)."""
    assert parse_strategy_spec("partial:2-2") == {"name": "partial", "freeze": "2-2"}
    assert parse_block_range("2-2", 3) == parse_block_range("2", 3) == {2}


def test_out_of_bounds_names_the_missing_block_and_lists_the_map() -> None:
    message = _message(parse_block_range, "0-9", 3, NAMES, error=LayerMapError)
    assert "out of bounds: block 9 does not exist" in message and "3 blocks" in message
    assert "0=embeddings" in message and "partial:0-1" in message


def test_config_path_checks_syntax_without_a_backbone() -> None:
    """build_strategy turns the config's strategy section into a Strategy: its syntax check runs there."""
    with pytest.raises(ConfigError, match="is reversed: start 3 > end 1"):
        Strategy("partial", freeze="3-1")
    assert Strategy("partial", freeze=" 0-1 , 2").static_frozen(3) == {0, 1, 2}


def test_gradual_with_too_many_numbers() -> None:
    message = _message(parse_strategy_spec, "gradual:1:2:3")
    assert "at most two" in message and "gradual:E:K" in message
