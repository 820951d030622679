"""A randomly initialised Uni-Mol molecule checkpoint in the published files' format (nothing downloaded).

``dict.txt`` is the published molecule dictionary (``mol.dict.txt``: one token per line, no counts, specials first);
the weights file is what Uni-Core saves, ``{"args": Namespace, "model": state_dict}``, with the encoder's tensors
under the published key names, a few pre-training head tensors the encoder ignores, and the ``[PAD]`` row (id 0
in Uni-Core's file-order numbering) of the token embedding zero, as training leaves it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from headstart.data.conformers import import_unimol_tools

__all__ = ["MOL_DICT_TOKENS", "write_random_unimol"]

# unimol/example_data/molecule/dict.txt of deepmodeling/Uni-Mol (= mol.dict.txt on the Hugging Face hub)
MOL_DICT_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "C", "N", "O", "S", "H", "Cl", "F", "Br", "I", "Si", "P", "B",
                   "Na", "K", "Al", "Ca", "Sn", "As", "Hg", "Fe", "Zn", "Cr", "Se", "Gd", "Au", "Li")


def write_random_unimol(directory: Path, seed: int = 0, name: str = "mol_pre_no_h_220816.pt") -> tuple[Path, Path]:
    """Write ``dict.txt`` and a random-init checkpoint ``name`` into ``directory``; return (weights, dictionary)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dictionary = directory / "dict.txt"
    dictionary.write_text("\n".join(MOL_DICT_TOKENS) + "\n", encoding="utf-8")
    import_unimol_tools()
    from unimol_tools.models.unimol import UniMolModel

    # UniMolModel loads a checkpoint in its constructor: give it an empty one (non-strict load of nothing).
    empty = directory / ".empty.pt"
    torch.save({"model": {}}, empty)
    torch.manual_seed(seed)
    try:
        model = UniMolModel(output_dim=1, data_type="molecule", pretrained_model_path=str(empty),
                            pretrained_dict_path=str(dictionary), remove_hs=True)
    finally:
        empty.unlink()
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("classification_head.")}
    state["embed_tokens.weight"][0] = 0.0
    g = torch.Generator().manual_seed(seed)
    n_tokens, dim, heads = state["embed_tokens.weight"].shape[0], model.args.encoder_embed_dim, 64
    state.update({  # pre-training heads of the published checkpoints: not part of the encoder
        "lm_head.dense.weight": torch.randn(dim, dim, generator=g) * 0.02,
        "lm_head.bias": torch.zeros(n_tokens),
        "pair2coord_proj.linear1.weight": torch.randn(heads, heads, generator=g) * 0.02,
        "encoder.final_head_layer_norm.weight": torch.ones(heads),
    })
    weights = directory / name
    torch.save({"args": argparse.Namespace(arch="unimol_base", seed=seed), "model": state}, weights)
    return weights, dictionary
