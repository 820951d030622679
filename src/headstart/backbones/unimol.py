"""Uni-Mol's molecule encoder (unimol-tools' ``UniMolModel``), from local weight files only.

Nothing is downloaded: unimol-tools fetches weights from Hugging Face when it is given no path; here the
checkpoint and its ``dict.txt`` must exist before the model is built, else a ConfigError says where they were
looked for and where to get them. unimol-tools' classification head is removed (headstart adds its own head),
so every parameter is in the layer map.

Layer map (17 blocks for the published molecule weights: 15 layers, 512 wide, 64 heads, ~47M parameters):

* ``stem`` (block 0): the atom-token embedding, the Gaussian distance kernel (``gbf``) and its projection to
  per-head attention biases (``gbf_proj``), and the encoder's ``emb_layer_norm``: everything before layer 0;
* ``layers.0`` ... ``layers.14`` (blocks 1-15): ``encoder.layers``; each layer passes on its attention logits
  as the next layer's pair bias;
* ``neck`` (block 16): the norms after the last layer (``encoder.final_layer_norm``, and
  ``final_head_layer_norm`` where an architecture has one: it only normalises the pair output, unused here).

The features are the final ``[CLS]`` token's vector ``[B, 512]``, as unimol-tools' ``return_repr=True``.

Freezing "encoder layers 0-12, train 13-14" (the usual Uni-Mol ``freeze_layers 0-12`` recipe) is headstart's
``partial`` strategy with ``freeze: "0-13"``: block indices are shifted by one because block 0 is the stem, so
"0-13" freezes the stem and ``layers.0`` ... ``layers.12`` and trains ``layers.13``, ``layers.14`` and the
``neck`` (the same as ``train_last: 3``). The neck stays trainable on purpose: ``final_layer_norm`` rescales
the output of ``layers.14``, which changes as it trains, and costs 1,024 parameters. (If a recipe kept the
embeddings trainable while freezing layers 0-12, that is ``freeze: "1-13"``.)

Only fully frozen encoders (linear probes) use the feature cache: between layers Uni-Mol carries a pair
representation (``[B, 64 heads, L, L]`` attention logits) as well as the token states, which the token cache does
not store, so ``can_split`` stays False.

The dictionary is read in file order (see :func:`headstart.data.conformers.load_unimol_dictionary`: unimol-tools
0.1.6 would number ``[CLS]`` as the checkpoint's ``[PAD]`` row), and the checkpoint is read with
``torch.load(weights_only=True)``: unimol-tools' own loader is bypassed (it also loads non-strictly and would
silently ignore a file that matches nothing).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from headstart.backbones.base import Backbone, BlockGroup
from headstart.data.conformers import (
    UniMolDataset,
    dictionary_digest,
    import_unimol_tools,
    load_unimol_dictionary,
)
from headstart.errors import CheckpointError, ConfigError, DataError, format_choices

import_unimol_tools()  # before any unimol_tools import: undoes its import-time side effects
from unimol_tools.models.unimol import UniMolModel  # noqa: E402

if TYPE_CHECKING:
    from headstart.config import UniMolConfig

log = logging.getLogger("headstart")

__all__ = ["UNIMOL_INPUTS", "UNIMOL_WEIGHTS_URL", "UniMolEncoder", "build_unimol_encoder", "unimol_dataset",
           "unimol_files"]

UNIMOL_WEIGHTS_URL = "https://huggingface.co/dptech/Uni-Mol-Models"
UNIMOL_INPUTS = ("src_tokens", "src_distance", "src_coord", "src_edge_type")
_WEIGHTS_HINT = (
    f"headstart never downloads weights: get mol_pre_no_h_220816.pt (for remove_hs: true) or "
    f"mol_pre_all_h_220816.pt (remove_hs: false), and mol.dict.txt, from {UNIMOL_WEIGHTS_URL} into a local folder, "
    f"then set backbone.unimol.weights to the .pt file and backbone.unimol.dictionary to mol.dict.txt (or save "
    f"it as dict.txt beside the weights)."
)


class _UniMolBody(UniMolModel):
    """unimol-tools' model with its checkpoint loading left to :class:`UniMolEncoder` (weights_only, strict
    key check); its constructor calls ``load_pretrained_weights`` unconditionally."""

    def load_pretrained_weights(self, path: str, strict: bool = False) -> None:
        return None


def unimol_files(weights: str | os.PathLike[str] | None,
                 dictionary: str | os.PathLike[str] | None = None) -> tuple[Path | None, Path]:
    """Resolved ``(weights, dictionary)`` paths, each checked to be an existing file (ConfigError otherwise).

    ``dictionary`` defaults to ``dict.txt`` beside the weights; ``weights=None`` (random initialisation, e.g. to
    load a fine-tuned headstart checkpoint on top) needs an explicit ``dictionary``.
    """
    weights_path = None if weights is None else Path(weights).expanduser().resolve()
    if weights_path is not None and not weights_path.is_file():
        inside = sorted(p.name for p in weights_path.glob("*.pt")) if weights_path.is_dir() else []
        seen = (f"a directory (holding {format_choices(inside)})" if weights_path.is_dir() else "missing")
        raise ConfigError(f"Uni-Mol weights not found: backbone.unimol.weights is '{weights}', looked for at "
                          f"{weights_path} ({seen}); expected the checkpoint file (.pt). {_WEIGHTS_HINT}")
    if dictionary is None:
        if weights_path is None:
            raise ConfigError("UniMolEncoder without weights (random initialisation) needs the token dictionary: "
                              "pass dictionary= (backbone.unimol.dictionary), the dict.txt of the weights you will "
                              "load.")
        dict_path = weights_path.parent / "dict.txt"
        where = "backbone.unimol.dictionary is unset, so dict.txt beside the weights was"
    else:
        dict_path = Path(dictionary).expanduser().resolve()
        where = f"backbone.unimol.dictionary is '{dictionary}',"
    if not dict_path.is_file():
        raise ConfigError(f"Uni-Mol token dictionary not found: {where} looked for at {dict_path}. {_WEIGHTS_HINT}")
    return weights_path, dict_path


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The model state of a Uni-Mol checkpoint ({'model': ...} as Uni-Core saves, 'model_state_dict', or bare)."""
    try:
        # Uni-Core checkpoints carry their training arguments as an argparse.Namespace
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling (unsafe objects), not a torch file, truncated file...
        raise CheckpointError(
            f"The Uni-Mol checkpoint {path} cannot be read with torch.load(weights_only=True): {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:400]}. headstart does not unpickle arbitrary objects. If you trust the "
            f"file, keep only its weights: python -c \"import torch; c = torch.load('{path.name}', "
            f"weights_only=False); torch.save({{'model': c['model']}}, 'weights_only.pt')\" and point "
            f"backbone.unimol.weights at weights_only.pt."
        ) from None
    state = checkpoint
    if isinstance(checkpoint, dict):
        state = checkpoint.get("model", checkpoint.get("model_state_dict", checkpoint))
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"The Uni-Mol checkpoint {path} holds no state dict (top level: {keys}); expected "
                              f"{{'model': state_dict}} as the published Uni-Mol weights.")
    return state


class UniMolEncoder(Backbone):
    """Uni-Mol molecule encoder: ``forward(inputs) -> [B, 512]`` (the final ``[CLS]`` vector).

    ``inputs`` is the dict :func:`headstart.data.conformers.collate_unimol` makes: ``src_tokens`` long [B, L],
    ``src_distance`` float [B, L, L], ``src_coord`` float [B, L, 3] (not used by the encoder: distances carry the
    geometry) and ``src_edge_type`` long [B, L, L]. Build the data with this encoder's :attr:`dictionary`.
    """

    # The stem's modules and each layer are module calls in forward (a layer reads the pair bias, never writes it).
    supports_gradient_checkpointing = True

    def __init__(self, weights: str | os.PathLike[str] | None, dictionary: str | os.PathLike[str] | None = None,
                 *, remove_hs: bool = True) -> None:
        super().__init__()
        self.weights_path, self.dictionary_path = unimol_files(weights, dictionary)
        self.remove_hs = bool(remove_hs)
        self.dictionary = load_unimol_dictionary(self.dictionary_path)
        # A non-None path keeps unimol-tools off its download branch; _UniMolBody never reads it.
        self.model = _UniMolBody(output_dim=1, data_type="molecule",
                                 pretrained_model_path=str(self.weights_path or self.dictionary_path),
                                 pretrained_dict_path=str(self.dictionary_path), remove_hs=self.remove_hs)
        self._use_file_order_dictionary()
        self.model.classification_head = None  # headstart's head replaces it; its weights are not loaded
        self.args: dict[str, Any] = {k: self.model.args[k] for k in sorted(self.model.args)}
        self.out_dim = int(self.args["encoder_embed_dim"])
        self.load_report: dict[str, Any] = {"weights": None}
        if self.weights_path is not None:
            self.load_report = self._load_weights(self.weights_path)

    def _use_file_order_dictionary(self) -> None:
        """Token ids as the checkpoint was trained with (unimol-tools built the model with its own numbering;
        the sizes agree, only which id is [PAD] / [CLS] / [SEP] / [UNK] changes)."""
        m, d = self.model, self.dictionary
        if len(d) != m.embed_tokens.num_embeddings:  # pragma: no cover - both read the same file
            raise ConfigError(f"The Uni-Mol dictionary {self.dictionary_path} has {len(d)} tokens but the model was "
                              f"built with {m.embed_tokens.num_embeddings}.")
        m.dictionary, m.padding_idx, m.mask_idx = d, d.pad(), d.index("[MASK]")
        m.embed_tokens.padding_idx = d.pad()
        with torch.no_grad():  # a fresh embedding's padding row is zero (the weights, when loaded, overwrite it)
            m.embed_tokens.weight[d.pad()].zero_()

    def _load_weights(self, path: Path) -> dict[str, Any]:
        state = _read_state(path)
        try:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise CheckpointError(
                f"The Uni-Mol checkpoint {path} does not fit the molecule encoder built from {self.dictionary_path}: "
                f"{' '.join(str(exc).split())[:600]}. Use the dict.txt published with these weights, and molecule "
                f"weights (mol_pre_*_220816.pt), not pocket / crystal / Uni-Mol2 ones."
            ) from None
        if missing:
            raise CheckpointError(
                f"The Uni-Mol checkpoint {path} lacks {len(missing)} of the encoder's {len(self.model.state_dict())} "
                f"tensors, e.g. {format_choices(missing, limit=6)} (it has e.g. {format_choices(list(state), limit=6)}"
                f"). Expected a Uni-Mol molecule checkpoint such as mol_pre_no_h_220816.pt from {UNIMOL_WEIGHTS_URL}."
            )
        pad_row = self.model.embed_tokens.weight[self.model.padding_idx]
        if bool(pad_row.any()):
            log.warning(
                "Uni-Mol checkpoint %s: the token embedding of [PAD] (id %d in %s) is not zero, as a checkpoint "
                "trained with this dictionary's order would have it; check that the dictionary belongs to these "
                "weights.", path, self.model.padding_idx, self.dictionary_path)
        name = path.name
        if ("no_h" in name and not self.remove_hs) or ("all_h" in name and self.remove_hs):
            log.warning(
                "Uni-Mol weights %s look like %s-hydrogen weights but remove_hs is %s: set backbone.unimol.remove_hs "
                "to %s (the inputs must match what the weights were pre-trained on).", name,
                "no" if "no_h" in name else "all", self.remove_hs, "no_h" in name)
        if unexpected:  # pre-training heads (lm_head, pair2coord_proj, dist_head...): not part of the encoder
            log.debug("Uni-Mol checkpoint %s: %d tensor(s) not used by the encoder: %s", path, len(unexpected),
                      format_choices(unexpected, limit=10))
        return {"weights": str(path), "missing": 0, "unexpected": len(unexpected),
                "unexpected_keys": sorted(unexpected)[:10]}

    # ----- layer map ------------------------------------------------------------------------------
    def blocks(self) -> list[tuple[str, nn.Module]]:
        m, enc = self.model, self.model.encoder
        neck = [n for n in (enc.final_layer_norm, enc.final_head_layer_norm) if n is not None]
        out: list[tuple[str, nn.Module]] = [
            ("stem", BlockGroup([m.embed_tokens, m.gbf, m.gbf_proj, enc.emb_layer_norm])),
            *((f"layers.{i}", layer) for i, layer in enumerate(enc.layers)),
        ]
        if neck:
            out.append(("neck", BlockGroup(neck)))
        return out

    # ----- forward --------------------------------------------------------------------------------
    def forward(self, inputs: Any) -> torch.Tensor:
        """``UniMolModel.forward(..., return_repr=True)`` with the same modules, except that the embedding
        dropout follows the stem's mode (unimol-tools ties it to the whole encoder's), so a frozen stem runs
        without dropout (DESIGN rule 6); the pair-representation losses of pre-training are skipped."""
        tokens, distance, edge_type = self._unpack(inputs)
        m, enc = self.model, self.model.encoder
        b, n = tokens.shape
        padding_mask = tokens.eq(m.padding_idx)
        x = enc.emb_layer_norm(m.embed_tokens(tokens))
        x = F.dropout(x, p=enc.emb_dropout, training=enc.emb_layer_norm.training)
        bias = m.gbf_proj(m.gbf(distance, edge_type)).permute(0, 3, 1, 2).contiguous().view(-1, n, n)
        if padding_mask.any():
            x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
            bias = bias.view(b, -1, n, n).masked_fill(padding_mask[:, None, None, :], float("-inf")).view(-1, n, n)
        for layer in enc.layers:
            x, bias, _ = layer(x, padding_mask=None, attn_bias=bias, return_attn=True)
        if enc.final_layer_norm is not None:
            x = enc.final_layer_norm(x)
        return x[:, 0]

    @staticmethod
    def _unpack(inputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(inputs, dict) or any(k not in inputs for k in UNIMOL_INPUTS):
            seen = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise DataError(f"UniMolEncoder takes a dict with {', '.join(UNIMOL_INPUTS)} (collate_unimol's batch), "
                            f"got {seen}. Build the data with headstart.data.conformers.UniMolDataset.")
        tokens, distance, edge_type = inputs["src_tokens"], inputs["src_distance"], inputs["src_edge_type"]
        if tokens.dim() != 2 or distance.shape != (*tokens.shape, tokens.shape[1]) or edge_type.shape != distance.shape:
            raise DataError(f"UniMolEncoder: src_tokens must be [B, L] with src_distance and src_edge_type [B, L, L]; "
                            f"got {tuple(tokens.shape)}, {tuple(distance.shape)} and {tuple(edge_type.shape)}.")
        return tokens, distance, edge_type

    # ----- records --------------------------------------------------------------------------------
    def describe(self) -> dict[str, object]:
        return {**super().describe(), "weights": None if self.weights_path is None else str(self.weights_path),
                "dictionary": str(self.dictionary_path), "remove_hs": self.remove_hs,
                "dictionary_tokens": len(self.dictionary), "load": dict(self.load_report)}

    def architecture(self) -> dict[str, object]:
        return {"type": "UniMolEncoder", "data_type": "molecule", "remove_hs": self.remove_hs,
                "dictionary": dictionary_digest(self.dictionary), "args": copy.deepcopy(self.args)}


def build_unimol_encoder(cfg: UniMolConfig) -> UniMolEncoder:
    """Encoder from ``backbone.unimol`` (the data side uses ``max_atoms`` and ``conformer_seed``)."""
    return UniMolEncoder(cfg.weights, cfg.dictionary, remove_hs=cfg.remove_hs)


def unimol_dataset(cfg: UniMolConfig, smiles: Sequence[str], labels: Any = None, rows: Any = None, *,
                   cache_dir: str | os.PathLike[str] | None = None, workers: int | None = None) -> UniMolDataset:
    """The inputs of :func:`build_unimol_encoder`'s encoder for ``smiles``: the same dictionary, ``max_atoms``,
    ``remove_hs`` and ``conformer_seed``. ``cache_dir`` is headstart's cache folder (``cache.dir``); conformers go
    to its ``conformers`` subfolder (None: ``$HEADSTART_CACHE_DIR/conformers`` or ``~/.cache/headstart/conformers``).
    """
    _, dictionary = unimol_files(cfg.weights, cfg.dictionary)
    conformer_dir = None if cache_dir is None else Path(cache_dir).expanduser() / "conformers"
    return UniMolDataset(smiles, labels, rows, dictionary=dictionary, max_atoms=cfg.max_atoms,
                         remove_hs=cfg.remove_hs, seed=cfg.conformer_seed, cache_dir=conformer_dir, workers=workers)
