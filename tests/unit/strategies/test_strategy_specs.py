"""--strategy / --strategies shorthand: every refused spec says what is wrong and lists the valid forms."""

from __future__ import annotations

import pytest

from headstart.errors import ConfigError
from headstart.strategies import STRATEGY_NAMES, STRATEGY_SPEC_FORMS, parse_strategy_spec

USE_ONE_OF = ("Use one of: full, linear_probe, partial:K (train the last K blocks, K >= 1), partial:A-B (freeze "
              "blocks A to B; also 'partial:A-B,C'), gradual[:E[:K]] (E head-only epochs, then one more block every "
              "K epochs), lora[:R] (LoRA adapters of rank R, default 8).")


def _message(spec: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_strategy_spec(spec)
    message = str(info.value)
    assert "\n" not in message and message.endswith(USE_ONE_OF), message
    return message


def test_every_strategy_name_has_a_form() -> None:
    assert {form.split(":")[0].split("[")[0].split(" ")[0] for form in STRATEGY_SPEC_FORMS} == set(STRATEGY_NAMES)


@pytest.mark.parametrize(("spec", "facts"), [
    ("bogus", ["'bogus' is not a strategy."]),
    ("lineer_probe", ["'lineer_probe' is not a strategy. Did you mean 'linear_probe'?"]),
    ("partail:2", ["'partail' is not a strategy. Did you mean 'partial'?"]),
    ("lora:big", ["'big' in 'lora:big' is not a whole number", "whole-number rank, e.g. lora:8 or lora:16"]),
    ("lora:0", ["'0' in 'lora:0' is below 1", "lora:8"]),
    ("partial:x", ["Block range 'x' (strategy.freeze) is not understood", "'0-3'"]),
    ("partial:0", ["'partial:0' trains none of the blocks", "Write linear_probe", "partial:0-0"]),
    ("partial", ["'partial' needs an argument", "partial:2", "partial:0-3"]),
    ("partial:5-2", ["is reversed: start 5 > end 2", "--strategy partial:2-5"]),
    ("partial:-1", ["negative index '-1'"]),
    ("gradual:0", ["'gradual' needs strategy.freeze_epochs >= 1 (got 0 in 'gradual:0')", "Write full"]),
    ("gradual:1:0", ["'0' in 'gradual:1:0' is below 1"]),
    ("gradual:1:2:3", ["at most two", "gradual:E:K"]),
    ("full:3", ["Strategy 'full' takes no ':' argument (got 'full:3'); write just 'full'."]),
    ("lora:", ["'lora:' ends with ':'", "write 'lora' alone"]),
    (":2", ["The strategy spec ':2' names no strategy"]),
    ("", ["The strategy spec is empty."]),
])
def test_bad_spec_says_what_and_lists_the_forms(spec: str, facts: list[str]) -> None:
    message = _message(spec)
    for fact in facts:
        assert fact in message, (fact, message)


@pytest.mark.parametrize(("spec", "fields"), [
    ("full", {"name": "full"}),
    ("linear-probe", {"name": "linear_probe"}),
    ("partial:2", {"name": "partial", "train_last": 2}),
    ("partial:0-2,5", {"name": "partial", "freeze": "0-2,5"}),
    ("partial: 0-1 ", {"name": "partial", "freeze": "0-1"}),
    ("gradual", {"name": "gradual"}),
    ("gradual:2:1", {"name": "gradual", "freeze_epochs": 2, "unfreeze_every": 1}),
    ("lora:16", {"name": "lora", "lora": {"r": 16}}),
])
def test_valid_specs(spec: str, fields: dict) -> None:
    assert parse_strategy_spec(spec) == fields
