"""Attribute masking (Hu et al., 2020, "Strategies for Pre-training Graph Neural Networks"): pretrain a graph
encoder on unlabelled molecules by hiding atoms and predicting their element from the neighbourhood.

Per molecule and draw, ``objective.mask_rate`` of its atoms are masked: ``round(mask_rate x atoms)`` of them, at
least one and, for molecules of two or more atoms, never all (a one-atom molecule has its only atom masked, as in
Hu et al.'s reference code). A masked atom's whole feature row (element, chirality, degree, charge, hydrogens,
radicals, hybridisation, aromaticity, ring) is replaced by the mask token; the graph's bonds are kept. The
encoder's stem and message-passing layers give per-atom states (:meth:`GraphEncoder.node_states
<headstart.backbones.graph.GraphEncoder.node_states>`), and a linear head over the element vocabulary predicts
each masked atom's ``atomic_num`` index with cross-entropy. The head trains with the encoder (at ``optim.lr``) and
is not exported: ``pretrained.safetensors`` holds the encoder only, which ``fit --pretrain RUN_DIR`` loads key for
key into the graph encoder of a labelled task.

The mask token is each atom column's "other" index (the last row of its embedding, ``ATOM_FEATURE_SIZES[i] - 1``,
see :mod:`headstart.data.molecules`), not an extra row. The encoder therefore has exactly the architecture (and
``pretrained.json`` record) of any graph encoder built from the same config, so fine-tuning loads every weight
without a shape mismatch and without a special "masking" encoder variant. The row is free in practice: the
element vocabulary covers atomic numbers 0-118, so ``atomic_num``'s "other" index never occurs in real data and
marks masked atoms unambiguously (no value of the 41k HIV molecules falls in any column's "other" index either);
the other columns' "other" rows are shared with out-of-vocabulary values, which the ``atomic_num`` mask row tells
apart. During fine-tuning the "other" rows keep their pretrained values (they are rarely, if ever, read).

Masks are drawn from ``(trainer.seed, split, epoch, molecule)`` (the training batches carry the epoch), never from
the process's RNG history, so a resumed run masks exactly the atoms of an uninterrupted one, whatever the loader
workers. Validation masks the same atoms every epoch, so ``val_loss`` is comparable across epochs and monitored by
default; ``val_masked_acc`` is the share of masked atoms whose element the head predicts. Epoch means weigh each
batch by its masked atoms. No label is read: the data needs no label column (``data.molecules.split:
stratified`` needs one to stratify on).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from headstart.errors import ConfigError
from headstart.pretraining.engine import Prepared, SelfSupervisedObjective, check_objective_config
from headstart.pretraining.module import ObjectiveModule, StepOutput
from headstart.pretraining.objectives import register_objective

if TYPE_CHECKING:
    from torch_geometric.data import Batch, Data

    from headstart.backbones import Backbone
    from headstart.config import OptimConfig, RunConfig
    from headstart.data.molecules import MoleculeDataset
    from headstart.modalities.molecule import MoleculeSplits

__all__ = ["METRICS", "AttributeMaskingObjective", "MaskedAtoms", "MaskingModule", "collate_masked", "draw_masked",
           "load_unlabelled_molecules", "mask_tokens", "masked_count"]

log = logging.getLogger("headstart")

METRICS = {"val_loss": "min", "val_masked_acc": "max"}  # what an attribute-masking run logs, and which way is better
ATOMIC_NUM = 0  # the column of ATOM_FEATURES predicted ("atomic_num")


def masked_count(n_atoms: int, rate: float) -> int:
    """Atoms masked in a molecule of ``n_atoms``: ``rate x n_atoms`` rounded half up, at least 1, at most
    ``n_atoms - 1`` when there are two or more (so some context is always left)."""
    n = int(n_atoms)
    if n <= 1:
        return n
    return min(max(1, int(np.floor(rate * n + 0.5))), n - 1)


def draw_masked(n_atoms: int, rate: float, key: Sequence[int]) -> np.ndarray:
    """The sorted positions of the :func:`masked_count` atoms masked, drawn from ``key`` alone."""
    rng = np.random.default_rng([int(k) for k in key])
    return np.sort(rng.permutation(int(n_atoms))[:masked_count(n_atoms, rate)])


def mask_tokens(atom_feature_sizes: Sequence[int]) -> torch.Tensor:
    """The mask token's feature row: each column's "other" index (its vocabulary size - 1), see the module doc."""
    return torch.tensor([int(size) - 1 for size in atom_feature_sizes], dtype=torch.long)


class MaskedAtoms(Dataset):
    """Item ``i``: molecule ``i``'s graph (unchanged) and the sorted positions of its atoms to mask;
    :func:`collate_masked` masks them in the batch. ``tokens`` is the mask token's feature row.

    Indexed by ``(i, epoch)`` (training: new masks each epoch, from ``EpochShuffleSampler(with_epoch=True)``) or
    by ``i`` (evaluation: the same masks every time), seeded by ``seed`` and ``stream`` (one per split).
    """

    def __init__(self, molecules: MoleculeDataset, rate: float, tokens: torch.Tensor, seed: int = 0,
                 stream: int = 0) -> None:
        self.molecules, self.rate, self.tokens = molecules, float(rate), tokens
        self.seed, self.stream = int(seed), int(stream)
        self.lengths = molecules.lengths  # longest-first evaluation batches

    def __len__(self) -> int:
        return len(self.molecules)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Data, torch.Tensor, torch.Tensor]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        graph = self.molecules.graphs[index]
        seeds = (self.seed, self.stream, index) if epoch is None else (self.seed, self.stream, epoch, index)
        return graph, torch.from_numpy(draw_masked(graph.num_nodes, self.rate, seeds)), self.tokens


def collate_masked(items: Sequence[tuple[Data, torch.Tensor, torch.Tensor]]) -> tuple[Batch, torch.Tensor,
                                                                                       torch.Tensor]:
    """``(Batch whose masked atoms' feature rows are the mask token, their rows in the batch's x [M], their
    atomic_num indices [M])``; the dataset's graphs are left as they are."""
    from torch_geometric.data import Batch

    graphs = [graph for graph, _, _ in items]
    offsets = np.cumsum([0] + [int(graph.num_nodes) for graph in graphs[:-1]])
    positions = torch.cat([pos + int(offset) for (_, pos, _), offset in zip(items, offsets, strict=True)])
    batch = Batch.from_data_list(graphs)
    targets = batch.x[positions, ATOMIC_NUM]
    batch.x = batch.x.index_put((positions,), items[0][2])  # out of place: never the dataset's tensors
    return batch, positions, targets


class MaskingModule(ObjectiveModule):
    """The graph encoder and a linear head over the element vocabulary, trained on the masked atoms."""

    def __init__(self, backbone: Backbone, optim: OptimConfig) -> None:
        if not callable(getattr(backbone, "node_states", None)):
            raise ConfigError(f"attribute masking predicts masked atoms from per-atom states, which a "
                              f"{type(backbone).__name__} does not give (no node_states); use the graph encoder "
                              f"(backbone.type: graph).")
        vocabulary = int(backbone.config["atom_feature_sizes"][ATOMIC_NUM])
        super().__init__(backbone, optim, head=nn.Linear(backbone.out_dim, vocabulary))

    def objective_step(self, batch: Any, train: bool) -> StepOutput | None:
        graphs, positions, targets = batch
        logits = self.objective_head(self.backbone.node_states(graphs)[positions]).float()
        loss = F.cross_entropy(logits, targets)
        metrics = {} if train else {"masked_acc": float((logits.argmax(dim=1) == targets).float().mean())}
        return StepOutput(loss, int(targets.numel()), metrics)


def load_unlabelled_molecules(cfg: RunConfig, seed: int) -> MoleculeSplits:
    """data.train / val / test read without their targets and split as ``fit`` splits them (data.molecules.split,
    the fractions, data.train_subset); every ``label_map`` is None."""
    from headstart.data.molecules import MoleculeDataset, featurize_all, read_molecules
    from headstart.modalities.molecule import MoleculeSplits, carve_rows

    d = cfg.data
    train = read_molecules(d.train, d, "data.train", require_targets=False)
    tables = {name: read_molecules(path, d, f"data.{name}", require_targets=False) if path else None
              for name, path in (("val", d.val), ("test", d.test))}
    if d.molecules is not None and d.molecules.split == "stratified" and train.targets is None:
        raise ConfigError(f"data.molecules.split 'stratified' keeps the class proportions of data.label_column "
                          f"'{d.label_column}', which data.train ('{d.train}') does not have; attribute_masking "
                          f"reads no labels: use split scaffold or random.")
    # the molecule modality's carve (scaffold / random / stratified / column, fractions, empty-split checks)
    idx, report = carve_rows(cfg, train, tables, seed)
    parts: dict[str, Any] = {}
    for name in ("train", "val", "test"):
        table, rows = (train, idx[name]) if name in idx else (tables[name], None)
        if table is None:
            parts[name] = None
            continue
        rows = np.arange(len(table)) if rows is None else rows
        parts[name] = MoleculeDataset([table.smiles[i] for i in rows], featurize_all([table.mols[i] for i in rows]),
                                      None, table.rows[rows])
    if d.train_subset is not None and d.train_subset < len(parts["train"]):
        keep = np.sort(np.random.default_rng(seed).choice(len(parts["train"]), d.train_subset, replace=False))
        parts["train"] = parts["train"].subset(keep)
    return MoleculeSplits(parts["train"], parts["val"], parts["test"], None, report)


class AttributeMaskingObjective(SelfSupervisedObjective):
    """``objective.name: attribute_masking`` for molecules and the graph encoder; see the module docstring."""

    name = "attribute_masking"
    modalities = ("molecule",)
    settings = ("mask_rate",)

    def check(self, cfg: RunConfig) -> None:
        if cfg.backbone.type != "graph":
            raise ConfigError(f"objective attribute_masking predicts masked atoms from the per-atom states of the "
                              f"graph encoder, but backbone.type is '{cfg.backbone.type}'. Set backbone.type: graph "
                              f"(with backbone.graph), or use objective.name: supervised for this backbone.")
        check_objective_config(cfg, METRICS)

    def prepare(self, cfg: RunConfig, split_seed: int, verbose: bool = True) -> Prepared:
        """Unlabelled splits -> masked-atom datasets -> loaders, the graph encoder, the module."""
        from headstart.data import EpochShuffleSampler
        from headstart.experiments.build import build_configured_backbone, loader_settings, make_loader
        from headstart.modalities import get_modality

        modality = get_modality(cfg.task)
        splits = load_unlabelled_molecules(cfg, split_seed)
        modality.settle(cfg, splits)
        data_state = modality.data_state(splits)
        backbone = build_configured_backbone(cfg, data_state, verbose=verbose)
        module = MaskingModule(backbone, cfg.optim)
        tokens = mask_tokens(backbone.config["atom_feature_sizes"])
        rate = cfg.objective.mask_rate
        loaders, sizes = {}, {}
        facts: dict[str, Any] = {"mask_rate": rate, "mask_token": tokens.tolist(), "atoms": {}, "masked_atoms": {}}
        for stream, name in enumerate(("train", "val", "test")):
            rows = getattr(splits, name)
            if rows is None:
                continue
            dataset = MaskedAtoms(rows, rate, tokens, cfg.trainer.seed, stream=stream)
            if name == "train":  # each index with its epoch: new masks every epoch, the same after a resume
                sampler = EpochShuffleSampler(len(dataset), cfg.trainer.seed, with_epoch=True)
                loaders[name] = DataLoader(dataset, batch_size=cfg.data.batch_size, sampler=sampler,
                                           collate_fn=collate_masked, **loader_settings(cfg))
            else:
                loaders[name] = make_loader(cfg, dataset, collate_masked, train=False)
            facts["atoms"][name] = int(rows.lengths.sum())
            facts["masked_atoms"][name] = sum(masked_count(n, rate) for n in rows.lengths.tolist())  # per epoch
            sizes[name] = f"{modality.describe_split(rows)} ({facts['atoms'][name]} atoms)"
        log.info("attribute_masking: %s of %s training atoms masked per epoch (mask_rate %s)",
                 facts["masked_atoms"]["train"], facts["atoms"]["train"], rate)
        return Prepared(module, loaders, data_state, sizes, facts)


register_objective(AttributeMaskingObjective())
