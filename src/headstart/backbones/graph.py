"""A GIN / GINE message-passing encoder over categorical atom and bond features (torch-geometric).

The architecture follows Hu et al. (2020), "Strategies for Pre-training Graph Neural Networks", in the
form the OGB reference code uses: every atom feature column (element, degree, charge...) has its own
``nn.Embedding`` and an atom's vector is their sum; each message-passing layer is a GIN convolution whose
messages are ``relu(h_j + e_ij)`` (``GINEConv``, ``e_ij`` the bond's embedding) followed by a
Linear-ReLU-Linear MLP (2x wider inside), a norm, ReLU except after the last layer, dropout and an
optional residual connection; a graph's vector is the mean / sum / max of its atoms.

Each layer has its *own* bond embedding, as in Hu et al., so the bond embeddings belong to the layer's
block, not to the stem: freezing the first k layers freezes exactly the bond embeddings those layers use.
``conv="gin"`` ignores bonds (``GINConv``) and has no bond embeddings at all.

Layer map, input to output (what strategies freeze and unfreeze):

* ``stem``: the atom embeddings;
* ``layers.0`` ... ``layers.{N-1}``: one message-passing layer each (bond embedding, convolution and its
  MLP, norm). Pooling has no parameters.

:meth:`GraphEncoder.node_states` gives the per-atom states before pooling (``forward`` pools them), for
node-level objectives (``attribute_masking`` in :mod:`headstart.pretraining.masking`).

Inputs are a ``torch_geometric.data.Batch`` (or a single ``Data``) with ``x`` long ``[atoms, atom columns]``,
``edge_index`` long ``[2, edges]``, ``edge_attr`` long ``[edges, bond columns]`` and ``batch`` ``[atoms]``.
The feature vocabularies (``atom_feature_sizes``, ``bond_feature_sizes``) come from the featurizer
(:mod:`headstart.data.molecules`); :meth:`GraphEncoder.architecture` records them, so
:meth:`GraphEncoder.from_architecture` rebuilds the same module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch_geometric import nn as gnn

from headstart.backbones.base import Backbone
from headstart.errors import ConfigError, DataError, did_you_mean, format_choices

if TYPE_CHECKING:
    from headstart.config import GraphEncoderConfig

__all__ = [
    "GRAPH_CONVS",
    "GRAPH_NORMS",
    "GRAPH_POOLINGS",
    "FeatureEmbedding",
    "GraphEncoder",
    "MessagePassingLayer",
    "build_graph_encoder",
]

GRAPH_CONVS = ("gine", "gin")
GRAPH_NORMS = ("batch", "layer", "none")
GRAPH_POOLINGS: dict[str, Callable[..., torch.Tensor]] = {
    "mean": gnn.global_mean_pool,
    "sum": gnn.global_add_pool,
    "max": gnn.global_max_pool,
}


class FeatureEmbedding(nn.Module):
    """Sum of one embedding per categorical column (OGB's AtomEncoder / BondEncoder).

    A sum rather than a concatenation keeps the width at ``hidden_size`` whatever the number of columns,
    and Xavier-uniform initialisation (as OGB) keeps the sum's scale independent of the column count.
    """

    def __init__(self, sizes: Sequence[int], hidden_size: int) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(int(size), hidden_size) for size in sizes)
        for emb in self.embeddings:
            nn.init.xavier_uniform_(emb.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[rows, columns]`` long indices -> ``[rows, hidden_size]``."""
        out = self.embeddings[0](features[:, 0])
        for i in range(1, len(self.embeddings)):
            out = out + self.embeddings[i](features[:, i])
        return out


class MessagePassingLayer(nn.Module):
    """One block of the layer map: (bond embedding ->) GIN(E) convolution -> norm -> ReLU -> dropout (+ input).

    The MLP is plain ``nn.Linear`` layers (not torch-geometric's ``MLP``, whose ``Linear`` is its own
    class): LoRA's default targets are ``nn.Linear`` modules, so these are what ``strategy: lora`` adapts.
    """

    def __init__(self, conv: str, hidden_size: int, bond_feature_sizes: Sequence[int], norm: str, dropout: float,
                 activate: bool, residual: bool) -> None:
        super().__init__()
        mlp = nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size), nn.ReLU(),
                            nn.Linear(2 * hidden_size, hidden_size))
        self.bond_encoder: FeatureEmbedding | None = None
        if conv == "gine":
            self.bond_encoder = FeatureEmbedding(bond_feature_sizes, hidden_size)
            self.conv: gnn.MessagePassing = gnn.GINEConv(mlp)
        else:
            self.conv = gnn.GINConv(mlp)
        # torch-geometric's BatchNorm: a batch holding a single atom (one methane) uses the running
        # statistics instead of failing as BatchNorm1d does in training.
        self.norm: nn.Module = (gnn.BatchNorm(hidden_size, allow_single_element=True) if norm == "batch"
                                else nn.LayerNorm(hidden_size) if norm == "layer" else nn.Identity())
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.activate = bool(activate)
        self.residual = bool(residual)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor | None) -> torch.Tensor:
        """Atom states ``[atoms, hidden]`` -> the next layer's ``[atoms, hidden]``."""
        if self.bond_encoder is not None:
            out = self.conv(h, edge_index, self.bond_encoder(edge_attr))
        else:
            out = self.conv(h, edge_index)
        out = self.norm(out)
        if self.activate:
            out = torch.relu(out)
        out = self.dropout(out)
        return out + h if self.residual else out


class GraphEncoder(Backbone):
    """Molecular graphs (``Batch`` / ``Data``) -> ``[num_graphs, hidden_size]`` features."""

    supports_gradient_checkpointing = True  # the stem and each layer are module calls in _encode

    def __init__(
        self,
        atom_feature_sizes: Sequence[int],
        bond_feature_sizes: Sequence[int],
        *,
        conv: str = "gine",
        hidden_size: int = 300,
        num_layers: int = 5,
        dropout: float = 0.0,
        pooling: str = "mean",
        residual: bool = True,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        atoms, bonds = [int(s) for s in atom_feature_sizes], [int(s) for s in bond_feature_sizes]
        _check_choice("conv", conv, GRAPH_CONVS)
        _check_choice("pooling", pooling, GRAPH_POOLINGS)
        _check_choice("norm", norm, GRAPH_NORMS)
        if not atoms or min(atoms) < 1:
            raise ConfigError(f"GraphEncoder needs at least one atom feature column, each with a vocabulary of at "
                              f"least 1; got atom_feature_sizes={atoms}.")
        if conv == "gine" and (not bonds or min(bonds) < 1):
            raise ConfigError(f"conv 'gine' embeds bond features: it needs at least one bond feature column, each "
                              f"with a vocabulary of at least 1; got bond_feature_sizes={bonds}. Use conv 'gin' to "
                              f"ignore bonds.")
        if hidden_size < 1 or num_layers < 1:
            raise ConfigError(f"GraphEncoder needs hidden_size >= 1 and num_layers >= 1, got {hidden_size} and "
                              f"{num_layers}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"GraphEncoder dropout must be in [0, 1), got {dropout}.")
        self.config: dict[str, Any] = {
            "atom_feature_sizes": atoms, "bond_feature_sizes": bonds, "conv": conv, "hidden_size": int(hidden_size),
            "num_layers": int(num_layers), "dropout": float(dropout), "pooling": pooling, "residual": bool(residual),
            "norm": norm,
        }
        self.stem = FeatureEmbedding(atoms, int(hidden_size))
        self.layers = nn.ModuleList(
            MessagePassingLayer(conv, int(hidden_size), bonds, norm, float(dropout), activate=i < num_layers - 1,
                                residual=residual)
            for i in range(num_layers)
        )
        self._pool = GRAPH_POOLINGS[pooling]
        self.out_dim = int(hidden_size)

    @classmethod
    def from_architecture(cls, record: Mapping[str, Any]) -> GraphEncoder:
        """The module :meth:`architecture` describes (weights freshly initialised)."""
        kwargs = {k: v for k, v in record.items() if k != "type"}
        return cls(kwargs.pop("atom_feature_sizes"), kwargs.pop("bond_feature_sizes"), **kwargs)

    # ----- layer map ------------------------------------------------------------------------------
    def blocks(self) -> list[tuple[str, nn.Module]]:
        return [("stem", self.stem), *((f"layers.{i}", layer) for i, layer in enumerate(self.layers))]

    # ----- forward --------------------------------------------------------------------------------
    def forward(self, inputs: Any) -> torch.Tensor:
        h, batch, num_graphs = self._encode(inputs)
        return self._pool(h, batch, size=num_graphs)

    def node_states(self, inputs: Any) -> torch.Tensor:
        """Per-atom states ``[atoms, hidden_size]`` after the last message-passing layer, before pooling (what
        node-level objectives such as attribute masking predict from); rows in ``inputs.x`` order."""
        return self._encode(inputs)[0]

    def _encode(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Stem + every layer: the atom states, each atom's graph and the number of graphs."""
        x, edge_index, edge_attr, batch, num_graphs = self._unpack(inputs)
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h, edge_index, edge_attr)
        return h, batch, num_graphs

    def _unpack(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
        """Check the graph against the feature columns the encoder was built for; a lone ``Data`` is one graph."""
        x = getattr(inputs, "x", None)
        edge_index = getattr(inputs, "edge_index", None)
        if not isinstance(x, torch.Tensor) or not isinstance(edge_index, torch.Tensor):
            raise DataError(
                f"GraphEncoder takes a torch_geometric Batch or Data with x (atom features) and edge_index, got a "
                f"{type(inputs).__name__}. Feed it the loader of the molecule data or build graphs with "
                f"headstart.data.molecules."
            )
        n_atom = len(self.config["atom_feature_sizes"])
        if x.dim() != 2 or x.shape[1] != n_atom or x.is_floating_point():
            raise DataError(
                f"GraphEncoder expects x as integer category indices [atoms, {n_atom}] (one column per atom feature), "
                f"got {x.dtype} of shape {tuple(x.shape)}. Featurize the molecules with the same featurizer (and "
                f"feature set) as the one the encoder was built for."
            )
        edge_attr = getattr(inputs, "edge_attr", None)
        if self.config["conv"] == "gine":
            n_bond = len(self.config["bond_feature_sizes"])
            if (not isinstance(edge_attr, torch.Tensor) or edge_attr.dim() != 2 or edge_attr.shape[1] != n_bond
                    or edge_attr.shape[0] != edge_index.shape[1] or edge_attr.is_floating_point()):
                seen = "none" if not isinstance(edge_attr, torch.Tensor) else (
                    f"{edge_attr.dtype} of shape {tuple(edge_attr.shape)}")
                raise DataError(
                    f"conv 'gine' needs edge_attr as integer category indices [edges={edge_index.shape[1]}, {n_bond}] "
                    f"(one column per bond feature), got {seen}. Featurize bonds with the featurizer the encoder was "
                    f"built for, or use conv 'gin' to ignore bonds."
                )
        batch = getattr(inputs, "batch", None)
        if batch is None:  # a single graph
            return x, edge_index, edge_attr, torch.zeros(x.shape[0], dtype=torch.long, device=x.device), 1
        num_graphs = getattr(inputs, "num_graphs", None)
        if num_graphs is None:  # a Data carrying a batch vector: read the count from it (one host sync)
            num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        return x, edge_index, edge_attr, batch, int(num_graphs)

    # ----- records --------------------------------------------------------------------------------
    def describe(self) -> dict[str, object]:
        return {**super().describe(), **self.config}

    def architecture(self) -> dict[str, object]:
        return {"type": "GraphEncoder", **self.config}


def _check_choice(what: str, value: str, choices: Sequence[str] | Mapping[str, Any]) -> None:
    if value not in choices:
        raise ConfigError(f"GraphEncoder {what} '{value}' is unknown.{did_you_mean(value, list(choices))} "
                          f"Valid: {format_choices(list(choices))}.")


def build_graph_encoder(cfg: GraphEncoderConfig) -> GraphEncoder:
    """Encoder from ``backbone.graph`` and the molecule featurizer's vocabularies."""
    # Lazy: the backbones package stays importable without the molecule data stack.
    from headstart.data.molecules import ATOM_FEATURE_SIZES, BOND_FEATURE_SIZES

    return GraphEncoder(ATOM_FEATURE_SIZES, BOND_FEATURE_SIZES, conv=cfg.conv, hidden_size=cfg.hidden_size,
                        num_layers=cfg.num_layers, dropout=cfg.dropout, pooling=cfg.pooling, residual=cfg.residual,
                        norm=cfg.norm)
