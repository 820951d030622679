"""Any user ``nn.Module`` as a backbone: import path + constructor kwargs + optional checkpoint.

The module must map its inputs to ``[B, D]`` features (or to ``[B, T, D]``, pooled by the mean over
T). ``out_dim`` is read from a common attribute (``out_dim``, ``embedding_size``, ``hidden_size``,
``output_size``, ``num_features``) or given explicitly. Blocks are auto-detected (largest
``ModuleList``/``Sequential``) unless listed.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone, detect_blocks, named_blocks_from_paths
from headstart.errors import ConfigError

__all__ = ["TorchBackbone", "import_object", "infer_out_dim"]

_DIM_ATTRS = ("out_dim", "embedding_size", "hidden_size", "output_size", "num_features", "d_model")


def import_object(path: str, where: str = "backbone.module") -> Any:
    """Import ``package.module:Name`` (or ``package.module.Name``)."""
    if ":" in path:
        mod_name, _, attr = path.partition(":")
    else:
        mod_name, _, attr = path.rpartition(".")
    if not mod_name or not attr:
        raise ConfigError(f"{where} '{path}' must look like 'package.module:ClassName'.")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(
            f"{where} '{path}': cannot import module '{mod_name}' ({exc}). Check the spelling and that the "
            f"package is installed or on PYTHONPATH."
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        from headstart.errors import did_you_mean

        names = [n for n in dir(module) if not n.startswith("_")]
        raise ConfigError(
            f"{where} '{path}': module '{mod_name}' has no attribute '{attr}'.{did_you_mean(attr, names)}"
        ) from exc


def infer_out_dim(module: nn.Module, given: int | None = None) -> int:
    if given is not None:
        return int(given)
    for attr in _DIM_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    config = getattr(module, "config", None)
    if config is not None and isinstance(getattr(config, "hidden_size", None), int):
        return int(config.hidden_size)
    raise ConfigError(
        f"Cannot tell the feature size of {type(module).__name__}: it has none of the attributes "
        f"{', '.join(_DIM_ATTRS)}. Pass out_dim explicitly (backbone.out_dim in a config, or "
        f"out_dim=... in create_finetune_model)."
    )


class TorchBackbone(Backbone):
    """Wraps a user module; features are its output, mean-pooled over time when 3-D."""

    def __init__(
        self,
        module: nn.Module,
        out_dim: int | None = None,
        blocks: list[str] | None = None,
        block_container: str | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.out_dim = infer_out_dim(module, out_dim)
        self._block_paths = list(blocks) if blocks else None
        self._block_container = block_container

    @classmethod
    def from_import(
        cls,
        module: str,
        kwargs: dict[str, Any] | None = None,
        out_dim: int | None = None,
        blocks: list[str] | None = None,
        block_container: str | None = None,
    ) -> TorchBackbone:
        factory = import_object(module)
        try:
            instance = factory(**(kwargs or {}))
        except TypeError as exc:
            raise ConfigError(
                f"backbone.module '{module}' could not be built with backbone.kwargs={kwargs or {}}: {exc}"
            ) from exc
        if not isinstance(instance, nn.Module):
            raise ConfigError(f"backbone.module '{module}' returned {type(instance).__name__}, not an nn.Module.")
        return cls(instance, out_dim=out_dim, blocks=blocks, block_container=block_container)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        if self._block_paths:
            return named_blocks_from_paths(self.module, self._block_paths)
        return detect_blocks(self.module, self._block_container)

    def forward(self, inputs: Any) -> torch.Tensor:
        out = self.module(inputs)
        if isinstance(out, tuple | list):
            out = out[0]
        if out.dim() == 3:
            out = out.mean(dim=1)
        return out
