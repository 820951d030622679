"""CoLES (Contrastive Learning for Event Sequences, Babaev et al. 2022): pretrain a sequence encoder without labels.

Each entity's history gives ``objective.split_count`` views per batch, sub-sequences of ``min_len``..``max_len``
events cut by ptls' splitters (``random_slices``: contiguous slices, ptls ``SampleSlices``; ``random``: random
subsets kept in time order, ptls ``SampleRandom`` with the length capped at the history's). Views of one entity
are positives, views of the batch's other entities negatives; the encoder's L2-normalised features go into ptls'
CoLES loss (``ContrastiveLoss`` with hard-negative pairs, or ``SoftmaxLoss``). ``data.batch_size`` counts
entities, so a batch holds ``batch_size x split_count`` sequences.

Short histories: an entity with at most ``min_len`` events has one possible view, its whole history (ptls'
rule). With ``short_histories: keep`` such entities stay (identical views add no positive loss, and they serve
as negatives for the others); ``drop`` removes those with fewer than ``min_len`` events from pretraining
(counted in the log and summary.json). The defaults (``min_len`` 1) let a 2-event history give different views.

Views are drawn from ``(trainer.seed, epoch, entity)`` (the training batches carry the epoch), never from the
process's RNG history, so a resumed run draws exactly the views of an uninterrupted one, whatever the loader
workers. Validation scores the same loss on the val entities with the same views every epoch, so ``val_loss`` is
comparable across epochs and monitored by default; ``val_recall_top_k`` is ptls' metric (the share of a view's
``split_count - 1`` nearest views, by cosine, that belong to its own entity, within a batch of
``data.eval_batch_size`` entities). No label is read: the data needs no label column.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ptls.frames.coles.losses import ContrastiveLoss, SoftmaxLoss
from ptls.frames.coles.metric import metric_recall_top_K
from ptls.frames.coles.sampling_strategies import HardNegativePairSelector
from ptls.frames.coles.split_strategy import AbsSplit, SampleRandom, SampleSlices
from ptls.nn.normalization import L2NormEncoder
from torch import nn
from torch.utils.data import DataLoader, Dataset

from headstart.errors import ConfigError, DataError
from headstart.pretraining.engine import Prepared, SelfSupervisedObjective
from headstart.pretraining.module import ObjectiveModule, StepOutput, WithEpoch
from headstart.pretraining.objectives import register_objective

if TYPE_CHECKING:
    from ptls.data_load.padded_batch import PaddedBatch

    from headstart.backbones import Backbone
    from headstart.config import OptimConfig, PretrainObjectiveConfig, RunConfig
    from headstart.data.events import EventSet

__all__ = ["METRICS", "ColesLoss", "ColesModule", "ColesObjective", "ColesViews", "collate_views", "draw_views",
           "make_splitter", "select_entities"]

log = logging.getLogger("headstart")

METRICS = {"val_loss": "min", "val_recall_top_k": "max"}  # what a CoLES run logs, and which way is better


class _RandomSubsets(SampleRandom):
    """ptls' ``SampleRandom`` with view lengths drawn up to the history's length, ``max_len`` included (ptls
    draws them up to ``max_len`` - 1, so a history shorter than that mostly gave whole-history views)."""

    def split(self, dates: np.ndarray) -> list[np.ndarray]:
        n = int(dates.shape[0])
        if n <= self.cnt_min:
            return [np.arange(n) for _ in range(self.split_count)]
        return SampleRandom(self.split_count, self.cnt_min, min(self.cnt_max, n) + 1).split(dates)


def make_splitter(objective: PretrainObjectiveConfig) -> AbsSplit:
    """The ptls splitter ``objective.sampling`` names, cutting ``split_count`` views of min_len..max_len events."""
    if objective.sampling == "random":
        return _RandomSubsets(objective.split_count, objective.min_len, objective.max_len)
    return SampleSlices(objective.split_count, objective.min_len, objective.max_len)


def draw_views(splitter: AbsSplit, length: int, key: tuple[int, ...]) -> list[np.ndarray]:
    """``splitter``'s views of a ``length``-event history, drawn from ``key`` alone (ptls' splitters use numpy's
    global RNG: it is seeded from ``key`` for the draw and restored afterwards)."""
    state = np.random.get_state()
    np.random.seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
    try:
        return splitter.split(np.arange(length))
    finally:
        np.random.set_state(state)


class ColesViews(Dataset):
    """Item ``i``: entity ``i``'s views, each ``{field: 1-D tensor}``. Indexed by ``(i, epoch)`` (training:
    new views each epoch) or by ``i`` (evaluation: the same views every time), seeded by ``seed`` and ``stream``."""

    def __init__(self, events: EventSet, splitter: AbsSplit, seed: int = 0, stream: int = 0) -> None:
        self.events, self.splitter, self.seed, self.stream = events, splitter, int(seed), int(stream)
        self.lengths = events.lengths  # length-grouped batches, longest-first evaluation

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, key: int | tuple[int, int]) -> list[dict[str, torch.Tensor]]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        seeds = (self.seed, self.stream, index) if epoch is None else (self.seed, self.stream, epoch, index)
        fields = self.events[index]["events"]
        return [{name: values[torch.from_numpy(np.asarray(ix, dtype=np.int64))] for name, values in fields.items()}
                for ix in draw_views(self.splitter, int(self.lengths[index]), seeds)]


def collate_views(batch: list[list[dict[str, torch.Tensor]]]) -> tuple[PaddedBatch, torch.Tensor]:
    """Every view of the batch padded into one ``PaddedBatch``, and each view's entity (its position in the batch)."""
    from headstart.data.events import collate_events

    padded, _ = collate_events([{"events": view, "label": None} for views in batch for view in views])
    return padded, torch.tensor([i for i, views in enumerate(batch) for _ in views], dtype=torch.long)


def select_entities(events: EventSet, min_len: int, policy: str, where: str) -> tuple[EventSet, int]:
    """Apply ``short_histories`` to entities with fewer than ``min_len`` events; returns the set and their count."""
    short = np.flatnonzero(events.lengths < min_len)
    if not len(short):
        return events, 0
    if policy == "keep":
        log.info("%s: %d of %d entities have fewer than objective.min_len=%d events; each of their views is the "
                 "whole history (short_histories: keep).", where, len(short), len(events), min_len)
        return events, len(short)
    kept = np.flatnonzero(events.lengths >= min_len)
    if len(kept) < 2:
        raise DataError(f"{where}: {len(short)} of {len(events)} entities have fewer than objective.min_len={min_len} "
                        f"events and short_histories is drop, which leaves {len(kept)}; CoLES needs two or more to "
                        f"contrast. Lower objective.min_len, or set objective.short_histories: keep.")
    log.info("%s: dropped %d of %d entities with fewer than objective.min_len=%d events (short_histories: drop).",
             where, len(short), len(events), min_len)
    return events.subset(kept), len(short)


class _HardNegatives(HardNegativePairSelector):
    """ptls' hard-negative selector, its ``neg_count`` capped by the negatives a batch has (ptls would take
    positives for the missing ones), keeping the number of pairs it picked for the mean."""

    def __init__(self, neg_count: int, split_count: int) -> None:
        super().__init__(neg_count)
        self.split_count = split_count
        self.pairs = 0

    def get_pairs(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ptls' pairs (every positive pair, the ``neg_count`` nearest negatives of each view), with the distances
        from ``torch.cdist``: ptls expands an n x n x d tensor per step (400 MB and 0.65 s at 1,280 views)."""
        neg_count = max(1, min(self.neg_count, labels.numel() - self.split_count))  # split_count views per entity
        n = labels.size(0)
        different = labels.expand(n, n) != labels.expand(n, n).t()
        positive = torch.triu((~different).int(), diagonal=1).nonzero(as_tuple=False)
        distances = torch.cdist(embeddings.detach(), embeddings.detach())
        upper_bound = int((2 * n) ** 0.5) + 1  # as ptls: larger than any distance of L2-normalised vectors
        closeness = (upper_bound - distances) * different.to(distances.dtype)  # only negatives score above 0
        _, indices = closeness.topk(k=neg_count, dim=0, largest=True)
        negative = torch.stack([torch.arange(n, dtype=indices.dtype, device=indices.device).repeat(neg_count),
                                torch.cat(indices.unbind(dim=0))]).t()
        self.pairs = len(positive) + len(negative)
        return positive, negative


class ColesLoss(nn.Module):
    """ptls' CoLES loss on L2-normalised features, as a mean over the pairs it scores (ptls' ContrastiveLoss sums
    them, which ties the loss scale and the useful LR to the batch size)."""

    def __init__(self, objective: PretrainObjectiveConfig) -> None:
        super().__init__()
        self.selector: _HardNegatives | None = None
        if objective.loss == "softmax":
            self.inner: nn.Module = SoftmaxLoss(temperature=objective.temperature)
        else:
            self.selector = _HardNegatives(objective.neg_count, objective.split_count)
            self.inner = ContrastiveLoss(margin=objective.margin, sampling_strategy=self.selector)

    def forward(self, embeddings: torch.Tensor, entities: torch.Tensor) -> torch.Tensor:
        loss = self.inner(embeddings, entities)
        return loss if self.selector is None else loss / max(1, self.selector.pairs)


class ColesModule(ObjectiveModule):
    """The encoder trained by :class:`ColesLoss`; no head (ptls' CoLES head is the L2 normalisation)."""

    def __init__(self, backbone: Backbone, optim: OptimConfig, objective: PretrainObjectiveConfig) -> None:
        super().__init__(backbone, optim)
        self.loss_fn = ColesLoss(objective)
        self.norm = L2NormEncoder()
        self.split_count = int(objective.split_count)

    def objective_step(self, batch: Any, train: bool) -> StepOutput | None:
        padded, entities = batch
        n = entities.numel() // self.split_count  # shape arithmetic: no device sync
        if n < 2:  # a lone entity has no negatives (a batch's last one)
            return None
        embeddings = self.norm(self.backbone(padded).float())
        loss = self.loss_fn(embeddings, entities)
        metrics = {} if train else {
            "recall_top_k": float(metric_recall_top_K(embeddings.detach(), entities, self.split_count - 1))}
        return StepOutput(loss, n, metrics)


class ColesObjective(SelfSupervisedObjective):
    """``objective.name: coles`` for event sequences; see the module docstring."""

    name = "coles"
    modalities = ("sequence",)
    settings = ("split_count", "min_len", "max_len", "sampling", "short_histories", "loss", "margin", "neg_count",
                "temperature")

    def check(self, cfg: RunConfig) -> None:
        problems = []
        if cfg.strategy.name != "full":
            problems.append(f"strategy '{cfg.strategy.name}' freezes blocks of a classifier being fine-tuned, but "
                            f"CoLES pretraining trains the whole encoder: remove strategy (or set it to full)")
        if cfg.pretrain:
            problems.append("pretrain (--pretrain) loads a classifier's encoder before fine-tuning; to start CoLES "
                            "from other weights, set backbone.checkpoint instead")
        t, o = cfg.trainer, cfg.optim
        if t.monitor not in METRICS and "monitor" in t.model_fields_set:
            problems.append(f"trainer.monitor is '{t.monitor}', but CoLES logs {', '.join(METRICS)}")
        if t.early_stopping is not None and t.early_stopping.monitor not in METRICS:
            problems.append(f"trainer.early_stopping.monitor is '{t.early_stopping.monitor}', but CoLES logs "
                            f"{', '.join(METRICS)}")
        if o.scheduler == "plateau" and o.plateau_monitor not in METRICS:
            problems.append(f"optim.plateau_monitor is '{o.plateau_monitor}', but CoLES logs {', '.join(METRICS)}")
        monitor = t.monitor if t.monitor in METRICS else "val_loss"
        if "monitor_mode" in t.model_fields_set and t.monitor_mode != METRICS[monitor]:
            problems.append(f"trainer.monitor_mode is '{t.monitor_mode}', but {monitor} is better when "
                            f"{'lower' if METRICS[monitor] == 'min' else 'higher'} ({METRICS[monitor]})")
        if problems:
            raise ConfigError("objective coles cannot run this config: " + "; ".join(problems) + ". A fine-tuning "
                              "config reused for CoLES usually needs: --set trainer.monitor=val_loss --set "
                              "trainer.monitor_mode=min (or remove those keys: CoLES then monitors val_loss).")
        if (t.monitor, t.monitor_mode) != (monitor, METRICS[monitor]):  # written to config.yaml resolved
            log.info("objective coles: trainer.monitor %s (%s) instead of the classifier's default %s.", monitor,
                     METRICS[monitor], t.monitor)
            t.monitor, t.monitor_mode = monitor, METRICS[monitor]

    def prepare(self, cfg: RunConfig, split_seed: int, verbose: bool = True) -> Prepared:
        """Unlabelled splits -> views -> loaders, the encoder sized by the training vocabularies, the module."""
        from headstart.data.events import load_event_splits
        from headstart.experiments.build import build_configured_backbone, loader_settings, make_loader
        from headstart.modalities import get_modality

        modality, o = get_modality(cfg.task), cfg.objective
        splits = load_event_splits(cfg.data, split_seed, labelled=False)
        splitter = make_splitter(o)
        loaders, sizes = {}, {}
        # per split: entities with fewer than min_len events (kept or dropped), and entities whose every view is
        # the whole history (at most min_len events: no positive signal of their own)
        facts: dict[str, Any] = {"short_histories": {"policy": o.short_histories, "min_len": o.min_len},
                                 "whole_history_views": {}}
        for index, name in enumerate(("train", "val", "test")):
            rows = getattr(splits, name)
            if rows is None:
                continue
            rows, facts["short_histories"][name] = select_entities(rows, o.min_len, o.short_histories,
                                                                   f"the {name} split")
            facts["whole_history_views"][name] = int(np.sum(rows.lengths <= o.min_len))
            if len(rows) < 2:
                more = "data.train" if name == "train" else f"data.{name} (or data.{name}_fraction)"
                raise DataError(f"The {name} split has {len(rows)} entit{'y' if len(rows) == 1 else 'ies'}; CoLES "
                                f"contrasts entities with each other and needs two or more. Give {more} more "
                                f"entities.")
            views = ColesViews(rows, splitter, cfg.trainer.seed, stream=index)
            loaders[name] = make_loader(cfg, views, collate_views, train=name == "train")
            if name == "train":  # the same batches, each index with its epoch
                loaders[name] = DataLoader(views, batch_sampler=WithEpoch(loaders[name].batch_sampler),
                                           collate_fn=collate_views, **loader_settings(cfg))
            sizes[name] = modality.describe_split(rows)
        if facts["whole_history_views"]["train"] == len(loaders["train"].dataset):
            log.warning("Every training entity has at most objective.min_len=%d events, so each of its views is its "
                        "whole history: CoLES has no positive pair to learn from. Lower objective.min_len (1 lets "
                        "2-event histories give different views).", o.min_len)
        data_state = modality.data_state(splits)
        backbone = build_configured_backbone(cfg, data_state, verbose=verbose)
        return Prepared(ColesModule(backbone, cfg.optim, o), loaders, data_state, sizes, facts)


register_objective(ColesObjective())
