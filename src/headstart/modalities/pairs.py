"""Pair inputs (two texts, two images): how ``backbone.pair`` is settled from the data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from headstart.errors import ConfigError

if TYPE_CHECKING:
    from headstart.config import RunConfig

__all__ = ["resolve_pair"]


def resolve_pair(cfg: RunConfig, pairs: bool, image: bool) -> None:
    """Settle ``backbone.pair`` from the data (auto: cross-encoder for text pairs, Siamese for image pairs)
    and reject what cannot work, before any model is built."""
    b = cfg.backbone
    if not pairs:
        if b.pair == "siamese":
            where = "an .npz with 'xa', 'xb' (and 'y')" if image else "data.text_pair_column (the second text)"
            raise ConfigError(f"backbone.pair is 'siamese' but data.train holds single inputs, not pairs. Give pairs "
                              f"({where}) or remove backbone.pair.")
        return
    if image and b.pair == "cross":
        raise ConfigError("backbone.pair is 'cross' but a cross-encoder reads both texts as one token sequence; image "
                          "pairs need backbone.pair: siamese (one shared ResNet per side + backbone.fusion).")
    if b.pair == "auto":
        b.pair = "siamese" if image else "cross"
