"""Backbone adapters behind one protocol (features ``[B, D]``, ``out_dim``, ordered ``blocks()``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from headstart.backbones.base import (
    Backbone,
    BlockGroup,
    check_layer_map,
    count_params,
    detect_blocks,
    named_blocks_from_paths,
)
from headstart.backbones.hf import DEFAULT_TEXT_MODEL, HFBackbone, default_text_model_path, pool_hidden
from headstart.backbones.ptls import PtlsBackbone, is_ptls_encoder
from headstart.backbones.ptls_build import (
    SEQUENCE_ENCODERS,
    SequenceEncoderBackbone,
    build_sequence_encoder,
    default_embedding_dim,
    rebuild_sequence_encoder,
)
from headstart.backbones.resnet import RESNET_PRESETS, ResNetBackbone
from headstart.backbones.siamese import FUSION_OPS, PairFusion, SiameseBackbone
from headstart.backbones.torch_module import TorchBackbone, check_module_factory, import_object
from headstart.registry import Registry

__all__ = [
    "BACKBONES",
    "DEFAULT_TEXT_MODEL",
    "FUSION_OPS",
    "RESNET_PRESETS",
    "SEQUENCE_ENCODERS",
    "Backbone",
    "BlockGroup",
    "HFBackbone",
    "PairFusion",
    "PtlsBackbone",
    "ResNetBackbone",
    "SequenceEncoderBackbone",
    "SiameseBackbone",
    "TorchBackbone",
    "as_backbone",
    "build_backbone",
    "build_sequence_encoder",
    "check_layer_map",
    "check_module_factory",
    "count_params",
    "default_embedding_dim",
    "default_text_model_path",
    "detect_blocks",
    "import_object",
    "named_blocks_from_paths",
    "pool_hidden",
    "rebuild_sequence_encoder",
]

BACKBONES: Registry[Any] = Registry("backbone type")


@BACKBONES.register("hf")
def _build_hf(cfg: Any) -> Backbone:
    return HFBackbone(cfg.name_or_path, pooling=cfg.pooling, blocks=cfg.blocks)


@BACKBONES.register("torch")
def _build_torch(cfg: Any) -> Backbone:
    return TorchBackbone.from_import(
        cfg.module, cfg.kwargs, out_dim=cfg.out_dim, blocks=cfg.blocks, block_container=cfg.block_container
    )


@BACKBONES.register("ptls")
def _build_ptls(cfg: Any) -> Backbone:
    if cfg.module is None:
        from headstart.errors import ConfigError

        raise ConfigError("backbone.type 'ptls' without backbone.module builds its encoder from backbone.sequence and "
                          "the training data's event fields (vocabulary sizes): run it with task "
                          "sequence_classification, or call headstart.backbones.build_sequence_encoder(spec, "
                          "categorical, numeric) in Python.")
    built = TorchBackbone.from_import(cfg.module, cfg.kwargs, out_dim=cfg.out_dim)
    return PtlsBackbone(built.module, blocks=cfg.blocks)


@BACKBONES.register("resnet")
def _build_resnet(cfg: Any) -> Backbone:
    from headstart.errors import ConfigError

    common = dict(in_channels=cfg.in_channels or 1, se=cfg.se, stem_stride=cfg.stem_stride)
    if cfg.depths or cfg.widths:
        if cfg.arch:
            raise ConfigError("backbone.arch and backbone.depths/widths both set: give a preset or the stages, not both.")
        return ResNetBackbone(cfg.depths or [], cfg.widths or [], **common)
    return ResNetBackbone.from_preset(cfg.arch or "resnet8", **common)


def build_backbone(cfg: Any) -> Backbone:
    """Backbone from a validated ``BackboneConfig`` (see :mod:`headstart.config`); wrapped in a
    ``SiameseBackbone`` (shared encoder + fusion) when ``backbone.pair`` is ``siamese``."""
    encoder = BACKBONES.get(cfg.type, where="backbone.type")(cfg)
    if getattr(cfg, "pair", "auto") == "siamese":
        return SiameseBackbone(encoder, getattr(cfg, "fusion", ("concat", "absdiff", "product")))
    return encoder


def as_backbone(module: nn.Module, out_dim: int | None = None) -> Backbone:
    """Wrap whatever the user passed (ptls encoder, HF model, plain module) in the right adapter."""
    if isinstance(module, Backbone):
        return module
    if is_ptls_encoder(module):
        return PtlsBackbone(module)
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is an optional extra
        PreTrainedModel = ()  # type: ignore[assignment,misc]
    if PreTrainedModel and isinstance(module, PreTrainedModel):
        path = getattr(module.config, "_name_or_path", "")
        return HFBackbone(path, model=module)
    return TorchBackbone(module, out_dim=out_dim)
