"""Fine-tuning strategies: which blocks train in which epoch, and LoRA injection."""

from __future__ import annotations

from headstart.strategies.base import (
    ENCODER_OPTIM_KEYS,
    STRATEGY_FIELDS,
    STRATEGY_NAMES,
    STRATEGY_SPEC_FORMS,
    LoraSpec,
    Strategy,
    check_block_range,
    format_strategy_spec,
    parse_block_range,
    parse_strategy_spec,
)
from headstart.strategies.lora import DEFAULT_LORA_TARGETS, apply_lora, lora_candidates

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "ENCODER_OPTIM_KEYS",
    "STRATEGY_FIELDS",
    "STRATEGY_NAMES",
    "STRATEGY_SPEC_FORMS",
    "LoraSpec",
    "Strategy",
    "apply_lora",
    "check_block_range",
    "format_strategy_spec",
    "lora_candidates",
    "parse_block_range",
    "parse_strategy_spec",
]
