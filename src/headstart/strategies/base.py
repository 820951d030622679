"""Fine-tuning strategies as pure functions of (epoch, number of blocks).

A strategy answers two questions about the backbone's layer map:

* ``static_frozen(n)``: blocks frozen for the *whole* run. They get ``requires_grad=False``, run in
  eval mode and (later) are the part the feature cache may precompute.
* ``trainable(epoch, n)``: blocks whose LR mask is 1 in that epoch. A block that is neither static
  frozen nor trainable in an epoch (gradual unfreezing) is frozen *for now*: no gradients, eval mode,
  LR mask 0 — but its param group stays in the optimizer.

The head is always trainable. Strategies hold no state, so resume recomputes the exact mask from
the restored epoch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from headstart.errors import ConfigError, LayerMapError, did_you_mean

__all__ = [
    "ENCODER_OPTIM_KEYS",
    "STRATEGY_FIELDS",
    "STRATEGY_NAMES",
    "STRATEGY_SPEC_FORMS",
    "LoraSpec",
    "Strategy",
    "check_block_range",
    "format_strategy_spec",
    "parse_block_range",
    "parse_strategy_spec",
]

STRATEGY_NAMES = ("full", "linear_probe", "partial", "gradual", "lora")
# The strategy section's fields each strategy reads (the others mean nothing under it): what `headstart tune`
# samples only for the strategy that uses them.
STRATEGY_FIELDS: dict[str, frozenset[str]] = {
    "full": frozenset(), "linear_probe": frozenset(), "partial": frozenset({"freeze", "train_last"}),
    "gradual": frozenset({"freeze_epochs", "unfreeze_every"}), "lora": frozenset({"lora"}),
}
# Optimizer settings of the encoder's weights: inert when no encoder weight trains (linear_probe).
ENCODER_OPTIM_KEYS = frozenset({"optim.encoder_lr", "optim.encoder_lr_ratio", "optim.layer_decay"})


@dataclass(frozen=True)
class LoraSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None  # None: the backbone's defaults


@dataclass(frozen=True)
class Strategy:
    name: str = "full"
    freeze: str | None = None  # partial: block range frozen for the whole run, e.g. "0-3"
    train_last: int | None = None  # partial: train only the last k blocks
    freeze_epochs: int = 0  # gradual: epochs with the encoder frozen
    unfreeze_every: int | None = None  # gradual: then unfreeze one block (top first) every k epochs
    lora: LoraSpec = field(default_factory=LoraSpec)

    def __post_init__(self) -> None:
        if self.name not in STRATEGY_NAMES:
            raise ConfigError(
                f"strategy.name '{self.name}' is unknown.{did_you_mean(self.name, STRATEGY_NAMES)} "
                f"Valid: {', '.join(STRATEGY_NAMES)}."
            )
        if self.name == "partial" and (self.freeze is None) == (self.train_last is None):
            raise ConfigError(
                "strategy 'partial' needs exactly one of strategy.freeze (a block range such as '0-3') or "
                "strategy.train_last (train the last k blocks)."
            )
        if self.freeze is not None:  # the syntax needs no backbone: fail before one is built
            check_block_range(self.freeze)
        if self.name == "gradual" and self.freeze_epochs < 1:
            raise ConfigError(
                f"strategy 'gradual' needs strategy.freeze_epochs >= 1 (got {self.freeze_epochs}); use 'full' to "
                f"train everything from the first epoch."
            )
        if self.unfreeze_every is not None and self.unfreeze_every < 1:
            raise ConfigError(f"strategy.unfreeze_every must be >= 1, got {self.unfreeze_every}.")

    @property
    def uses_lora(self) -> bool:
        return self.name == "lora"

    def static_frozen(self, n_blocks: int, block_names: list[str] | None = None) -> set[int]:
        if self.name == "linear_probe":
            return set(range(n_blocks))
        if self.name == "partial":
            if self.freeze is not None:
                return parse_block_range(self.freeze, n_blocks, block_names)
            k = int(self.train_last or 0)
            if not 0 <= k <= n_blocks:
                raise LayerMapError(
                    f"strategy.train_last={k} is out of bounds: the backbone has {n_blocks} blocks "
                    f"{_listing(block_names)}. Use a value from 0 to {n_blocks}."
                )
            return set(range(n_blocks - k))
        return set()

    def trainable(self, epoch: int, n_blocks: int, block_names: list[str] | None = None) -> set[int]:
        frozen = self.static_frozen(n_blocks, block_names)
        candidates = [i for i in range(n_blocks) if i not in frozen]
        if self.name == "gradual":
            if epoch < self.freeze_epochs:
                return set()
            if self.unfreeze_every is not None:
                k = 1 + (epoch - self.freeze_epochs) // self.unfreeze_every
                return set(candidates[-k:]) if k < len(candidates) else set(candidates)
        return set(candidates)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for key in ("freeze", "train_last", "unfreeze_every"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.freeze_epochs:
            out["freeze_epochs"] = self.freeze_epochs
        if self.uses_lora:
            out["lora"] = self.lora.__dict__
        return out


def _listing(block_names: list[str] | None) -> str:
    if not block_names:
        return ""
    return "(" + ", ".join(f"{i}={n}" for i, n in enumerate(block_names)) + ")"


_RANGE_EXAMPLES = "write it like '0-3' (blocks 0 to 3, both included), '5' or '0-2,5'"


def check_block_range(spec: str | int, where: str = "strategy.freeze") -> list[tuple[int, int]]:
    """Check the syntax of a block range such as ``"0-3"``, ``"5"`` or ``"0-2,5"``; return its (lo, hi) parts.

    Needs no backbone, so configs and ``--strategy partial:...`` fail before any model is built; the bounds
    are checked by :func:`parse_block_range` against the layer map.
    """
    text = str(spec).replace(" ", "")
    parts: list[tuple[int, int]] = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise ConfigError(_range_syntax_problem(str(spec), part, where))
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if lo > hi:
            inside = f" in '{part}'" if part != text else ""
            fixed = _swap(str(spec), part, hi, lo)
            raise ConfigError(
                f"Block range '{spec}' ({where}) is reversed{inside}: start {lo} > end {hi}. Ranges run from the "
                f"lower block index to the higher, both ends included: write '{fixed}' (on the command line: "
                f"--strategy partial:{fixed})."
            )
        parts.append((lo, hi))
    return parts


def _range_syntax_problem(spec: str, part: str, where: str) -> str:
    """Why one comma-separated part of a block range is not ``N`` or ``N-M``, as a full message."""
    layer_map = "`headstart inspect CONFIG` prints the numbered layer map"
    if not part:
        return (
            f"Block range '{spec}' ({where}) has an empty part (a leading, trailing or doubled comma, or no "
            f"range at all); {_RANGE_EXAMPLES}."
        )
    if re.fullmatch(r"-\d+", part):
        return (
            f"Block range '{spec}' ({where}) contains the negative index '{part}', but blocks are numbered from 0 "
            f"(the block nearest the input) upwards; there is no Python-style -1 for the last block. To train only "
            f"the last k blocks use strategy.train_last: k (--strategy partial:k, e.g. partial:1); to freeze blocks "
            f"{_RANGE_EXAMPLES}; {layer_map}."
        )
    return (
        f"Block range '{spec}' ({where}) is not understood: '{part}' is neither a block index nor a range 'lo-hi' "
        f"of two indices. Blocks are given by number, 0 being the block nearest the input; {_RANGE_EXAMPLES}; "
        f"{layer_map}."
    )


def _swap(spec: str, part: str, lo: int, hi: int) -> str:
    """``spec`` with the reversed ``part`` written the right way round."""
    parts = spec.replace(" ", "").split(",")
    return ",".join(f"{lo}-{hi}" if p == part else p for p in parts)


def parse_block_range(spec: str | int, n_blocks: int, block_names: list[str] | None = None) -> set[int]:
    """Parse ``"0-3"`` (inclusive), ``"5"`` or ``"0-2,5"`` into block indices, checked against ``n_blocks``."""
    out: set[int] = set()
    for lo, hi in check_block_range(spec):
        if hi >= n_blocks:
            raise LayerMapError(
                f"Block range '{spec}' (strategy.freeze) is out of bounds: block {hi} does not exist, the backbone "
                f"has {n_blocks} blocks, valid indices are 0 to {n_blocks - 1} {_listing(block_names)}. Use a range "
                f"inside 0-{n_blocks - 1} (e.g. --strategy partial:0-{max(0, n_blocks - 2)}); "
                f"`headstart inspect CONFIG` prints the layer map."
            )
        out.update(range(lo, hi + 1))
    return out


# The --strategy / --strategies shorthand, one entry per form: what a refused spec lists as its choices.
STRATEGY_SPEC_FORMS = (
    "full",
    "linear_probe",
    "partial:K (train the last K blocks, K >= 1)",
    "partial:A-B (freeze blocks A to B; also 'partial:A-B,C')",
    "gradual[:E[:K]] (E head-only epochs, then one more block every K epochs)",
    "lora[:R] (LoRA adapters of rank R, default 8)",
)
_USE_ONE_OF = "Use one of: " + ", ".join(STRATEGY_SPEC_FORMS) + "."


def parse_strategy_spec(spec: str) -> dict[str, Any]:
    """CLI shorthand -> strategy fields: ``full``, ``linear_probe``, ``partial:2`` (train last 2),
    ``partial:0-3`` (freeze 0-3), ``gradual:2`` (freeze 2 epochs), ``gradual:2:1``, ``lora``, ``lora:16``.

    Every refusal ends with the valid forms, so a typo on the command line is fixed without the docs.
    """
    try:
        return _parse_spec(str(spec))
    except ConfigError as exc:
        raise ConfigError(f"{exc} {_USE_ONE_OF}") from None


def _parse_spec(spec: str) -> dict[str, Any]:
    """:func:`parse_strategy_spec` without the list of valid forms in its errors."""
    name, colon, arg = spec.partition(":")
    name = name.strip().replace("-", "_")
    if name not in STRATEGY_NAMES:
        if not name:
            raise ConfigError(f"The strategy spec '{spec}' names no strategy (nothing before ':')." if colon
                              else "The strategy spec is empty.")
        raise ConfigError(f"'{name}' is not a strategy.{did_you_mean(name, STRATEGY_NAMES)}")
    fields: dict[str, Any] = {"name": name}
    arg = arg.strip()
    if not arg:
        if colon:
            raise ConfigError(f"'{spec}' ends with ':' but gives no argument after it; write '{name}' alone or add one.")
        if name == "partial":
            raise ConfigError(
                "'partial' needs an argument: partial:K trains the last K blocks (e.g. partial:2), partial:A-B "
                "freezes blocks A to B (e.g. partial:0-3)."
            )
        return fields
    if name == "partial":
        if arg.isdigit():
            if int(arg) == 0:
                raise ConfigError(
                    f"'{spec}' trains none of the blocks (partial:K trains the last K blocks, so K=0 trains only the "
                    f"head). Write linear_probe to train only the head, partial:K with K >= 1 to train the last K "
                    f"blocks, or partial:0-0 to freeze only block 0."
                )
            fields["train_last"] = int(arg)
        else:
            check_block_range(arg)
            fields["freeze"] = arg
    elif name == "gradual":
        parts = arg.split(":")
        if len(parts) > 2:
            raise ConfigError(
                f"'{spec}' has {len(parts)} ':'-separated numbers, but gradual takes at most two: gradual:E "
                f"(E head-only epochs) or gradual:E:K (then one more block every K epochs), e.g. gradual:2:1."
            )
        why = "gradual:E[:K] needs whole numbers of epochs, e.g. gradual:2:1"
        fields["freeze_epochs"] = _spec_int(parts[0], spec, why)
        if fields["freeze_epochs"] == 0:
            raise ConfigError(
                f"strategy 'gradual' needs strategy.freeze_epochs >= 1 (got 0 in '{spec}'): E counts the head-only "
                f"epochs before the first block unfreezes. Write full to train everything from the first epoch, or "
                f"gradual:1 (or more) for a head-only start."
            )
        if len(parts) > 1:
            fields["unfreeze_every"] = _spec_int(parts[1], spec, why, minimum=1)
    elif name == "lora":
        fields["lora"] = {"r": _spec_int(arg, spec, "lora:R needs a whole-number rank, e.g. lora:8 or lora:16",
                                         minimum=1)}
    else:
        raise ConfigError(f"Strategy '{name}' takes no ':' argument (got '{spec}'); write just '{name}'.")
    return fields


def format_strategy_spec(fields: dict[str, Any]) -> str:
    """Strategy fields (a config's ``strategy`` section) -> the CLI shorthand: a short label for tables."""
    name = fields.get("name", "full")
    if name == "partial":
        arg = fields.get("train_last") if fields.get("train_last") is not None else fields.get("freeze")
        return f"partial:{arg}" if arg is not None else "partial"
    if name == "gradual":
        every = fields.get("unfreeze_every")
        return f"gradual:{fields.get('freeze_epochs', 0)}" + (f":{every}" if every else "")
    if name == "lora":
        r = (fields.get("lora") or {}).get("r")
        return f"lora:{r}" if r is not None else "lora"
    return str(name)


def _spec_int(text: str, spec: str, why: str, minimum: int = 0) -> int:
    """A whole number from one ':' part of a spec; ``why`` says what the number is for."""
    text = text.strip()
    if not text.isdigit():
        raise ConfigError(f"'{text}' in '{spec}' is not a whole number: {why}.")
    if int(text) < minimum:
        raise ConfigError(f"'{text}' in '{spec}' is below {minimum}: {why}.")
    return int(text)
