"""A FinetuneModule's constructor arguments as plain data, so checkpoints load with ``weights_only=True``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from headstart.errors import ConfigError
from headstart.strategies import LoraSpec

__all__ = ["lora_spec", "plain"]


def lora_spec(lora: LoraSpec | Mapping[str, Any] | None) -> LoraSpec:
    """A LoraSpec from itself, None (the defaults) or its saved dict (target_modules saved as a list)."""
    if lora is None or isinstance(lora, LoraSpec):
        return lora or LoraSpec()
    fields = dict(lora)
    if fields.get("target_modules") is not None:  # a list once saved as a hyper-parameter
        fields["target_modules"] = tuple(fields["target_modules"])
    return LoraSpec(**fields)


def plain(value: Any, where: str) -> Any:
    """``value`` as plain data (dict, list, str, int, float, bool, None) for a checkpoint's hyper-parameters.

    Anything else would be pickled by class: ``torch.load(weights_only=True)`` (how Lightning and headstart read
    checkpoints) refuses it, and numpy scalars, tensors or dataclasses would not load back as arguments.
    """
    if value is None:
        return None
    for kind in (bool, int, float, str):  # numpy scalars and str subclasses become the builtin type
        if isinstance(value, kind):
            return kind(value)
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value), where)
    if hasattr(value, "model_dump"):  # a pydantic config section
        return plain(value.model_dump(), where)
    if isinstance(value, Mapping):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if hasattr(value, "tolist"):  # tensors, numpy arrays and scalars, pandas Index / Series
        return plain(value.tolist(), where)
    if isinstance(value, Sequence):  # list, tuple, range...
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(
        f"FinetuneModule argument {where}={value!r} is a {type(value).__name__}, which a checkpoint cannot store "
        f"as plain data, so load_from_checkpoint could not rebuild the module. Pass a str, number, list or dict "
        f"(or a dataclass / pydantic config of those)."
    )
