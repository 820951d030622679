"""Several processes, one run: who writes, which rows each rank trains on, metrics over the whole split.

Lightning launches the processes (``trainer.devices: 2`` re-runs the same command once per extra device) or is
launched by torchrun / SLURM; either way every process runs ``run_fit`` from the top. The rules here keep
that safe without a launcher of our own:

- ``process_world`` asks Lightning's own environment detection (a Trainer built from the config, before any
  process starts) which rank this process is, so rank 0 alone locks and writes the run directory.
- ``shard_loader`` splits every *global* batch of a loader into one contiguous piece per rank. ``data.batch_size``
  stays the global batch: one config gives the same optimisation on 1 or N processes, the epoch-seeded order
  and length grouping are unchanged, and a run resumed with another process count continues the same batches.
  A batch smaller than the world gives the short ranks its first row again (as ``DistributedSampler`` pads).
- ``gather_eval`` collects every rank's validation outputs with the dataset rows they came from and drops the
  padding duplicates, so validation metrics are computed over each row of the split exactly once.
- ``RankConsistency`` asserts that every rank built the same layer map, param groups and LR schedule, and that
  the weights are still equal after each epoch (a parameter DDP does not synchronise would show there).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["RankConsistency", "ShardedBatchSampler", "gather_eval", "process_world", "reduce_sum", "shard_loader"]


def process_world(trainer_kwargs: dict[str, Any]) -> tuple[int, int, int]:
    """``(global rank, world size, processes on this node)`` as Lightning will see them for these Trainer
    arguments: LOCAL_RANK / NODE_RANK set by Lightning's launcher, torchrun's RANK / WORLD_SIZE, SLURM's task
    variables. Nothing is launched: the processes start when training starts."""
    probe_args = {k: trainer_kwargs[k] for k in ("accelerator", "devices", "num_nodes", "strategy", "precision")
                  if k in trainer_kwargs}
    quiet = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning", "lightning_fabric")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.WARNING)  # the probe's "GPU available: ..." lines would print twice
    try:
        probe = pl.Trainer(**probe_args, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                           enable_model_summary=False)
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
    return int(probe.global_rank), int(probe.world_size), int(probe.num_devices)


class ShardedBatchSampler(Sampler[list[int]]):
    """This rank's piece of each global batch of ``batches`` (a batch sampler), in the global order.

    ``sampler`` is the wrapped batch sampler's own sampler, so Lightning's ``set_epoch`` reaches the
    epoch-seeded shuffle through it. ``yielded`` lists the dataset rows of the current pass in the order
    they were handed out (evaluation outputs are matched to rows with it).
    """

    def __init__(self, batches: Any, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside a world of {world} processes")
        self.batches = batches
        self.rank, self.world = int(rank), int(world)
        self.sampler = getattr(batches, "sampler", None)
        self.yielded: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        for target in (self.batches, self.sampler):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)

    def piece(self, batch: list[int]) -> list[int]:
        """Rank ``r`` takes rows ``[r*n/W, (r+1)*n/W)`` of an ``n``-row batch; an empty piece repeats row 0."""
        n = len(batch)
        mine = list(batch[self.rank * n // self.world:(self.rank + 1) * n // self.world])
        return mine or [batch[0]]

    def __iter__(self) -> Iterator[list[int]]:
        self.yielded = []
        for batch in self.batches:
            mine = self.piece([int(i) for i in batch])
            self.yielded.extend(mine)
            yield mine

    def __len__(self) -> int:
        return len(self.batches)


def shard_loader(loader: DataLoader, rank: int, world: int) -> DataLoader:
    """The same loader (dataset, collate, workers) over this rank's pieces of its batches."""
    sharded = ShardedBatchSampler(loader.batch_sampler, rank, world)
    return DataLoader(loader.dataset, batch_sampler=sharded, collate_fn=loader.collate_fn,
                      num_workers=loader.num_workers, persistent_workers=loader.persistent_workers,
                      pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn)


def gather_eval(trainer: pl.Trainer, loader: DataLoader, tensors: list[torch.Tensor | None]
                ) -> list[torch.Tensor | None]:
    """Every rank's rows of ``tensors`` (each ``[n_local, ...]`` in loader order, or None), gathered from all
    ranks in dataset-row order with each row once. All ranks get the same result."""
    sampler = loader.batch_sampler
    if not isinstance(sampler, ShardedBatchSampler):
        raise TypeError("gather_eval needs a loader made by shard_loader (its rows are known)")
    rows = torch.tensor(sampler.yielded, dtype=torch.long)
    local = [None if t is None else t.detach().cpu() for t in tensors]
    for t in local:
        if t is not None and len(t) != len(rows):
            raise RuntimeError(f"rank {sampler.rank}: {len(t)} evaluation outputs for {len(rows)} rows handed out")
    gathered: list[Any] = [None] * sampler.world
    torch.distributed.all_gather_object(gathered, (rows, local))
    all_rows = torch.cat([g[0] for g in gathered])
    order = torch.argsort(all_rows, stable=True)
    sorted_rows = all_rows[order]
    first = torch.ones_like(sorted_rows, dtype=torch.bool)
    first[1:] = sorted_rows[1:] != sorted_rows[:-1]  # padding rows repeat a row another piece already has
    keep = order[first]
    out: list[torch.Tensor | None] = []
    for k in range(len(tensors)):
        parts = [g[1][k] for g in gathered]
        out.append(None if any(p is None for p in parts) else torch.cat(parts)[keep])
    return out


def reduce_sum(trainer: pl.Trainer, value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over all ranks (itself in one process)."""
    if trainer.world_size <= 1:
        return value
    return trainer.strategy.reduce(value.clone(), reduce_op="sum")


def _digest(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


class RankConsistency(pl.Callback):
    """Fail loudly when ranks disagree: a layer map, param group or schedule built differently on one rank, or
    weights that drifted apart (a parameter DDP does not synchronise). One collective per epoch."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size <= 1:
            return
        groups = [{"name": g.get("name"), "lr": g["lr"], "n": len(g["params"]),
                   "size": sum(p.numel() for p in g["params"])} for g in trainer.optimizers[0].param_groups]
        facts = {"blocks": list(getattr(pl_module, "block_names", [])), "groups": groups,
                 "schedule": pl_module.schedule.state_dict() if getattr(pl_module, "schedule", None) else None,
                 "trainable": sorted(getattr(pl_module, "trainable_blocks", []))}
        self._compare(trainer, _digest(facts), facts, "layer map, param groups and LR schedule")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size <= 1:
            return
        with torch.no_grad():
            sums = [float(p.detach().double().sum()) for p in pl_module.parameters()]
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, sums)
        ref = gathered[0]
        for rank, other in enumerate(gathered[1:], start=1):
            worst = max((abs(a - b) / (1.0 + abs(a)) for a, b in zip(ref, other, strict=True)), default=0.0)
            if worst > 1e-4:
                names = [n for n, _ in pl_module.named_parameters()]
                bad = next(n for n, a, b in zip(names, ref, other, strict=True) if abs(a - b) / (1.0 + abs(a)) > 1e-4)
                raise RuntimeError(
                    f"After epoch {trainer.current_epoch + 1} the weights of rank {rank} differ from rank 0's (first: "
                    f"'{bad}', relative difference {worst:.3g}): a parameter was trained without DDP synchronising "
                    f"its gradient. This is a bug; please report it with the config."
                )

    @staticmethod
    def _compare(trainer: pl.Trainer, digest: str, facts: dict[str, Any], what: str) -> None:
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, (digest, facts))
        for rank, (other, other_facts) in enumerate(gathered):
            if other != gathered[0][0]:
                raise RuntimeError(
                    f"Rank {rank} built a different {what} than rank 0 ({other_facts} vs {gathered[0][1]}). Every "
                    f"process must see the same config, data and code; check that all nodes run the same version."
                )
