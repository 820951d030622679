"""Precompute the frozen prefix once, then train on its outputs (DESIGN rule 4).

``plan_cache`` decides where the cut goes: after the last block that no epoch of the run trains (a
linear probe cuts after the last block and caches the pooled features). It is used only where it is
exact: the prefix is frozen for the whole run, runs in eval mode (no dropout, fixed BatchNorm
statistics) and sees deterministic inputs, so its outputs are the same every epoch.

``cached_features`` looks the entry up by its content key and builds it when missing, in
length-sorted batches (little padding). ``CachedFeatureDataset`` + ``CachedCollator`` then replace
the raw dataset and collator; ``FinetuneModule.features`` recognises the cached batch keys and runs
only the trainable suffix, so the same model object trains on raw or on cached batches.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from headstart.cache.key import cache_key, prefix_components
from headstart.cache.store import CacheEntry, CacheWriter, FeatureCache

__all__ = [
    "CACHED_KEYS",
    "CachePlan",
    "CachedCollator",
    "CachedFeatureDataset",
    "cached_features",
    "plan_cache",
    "pooled_features",
]

log = logging.getLogger("headstart")

# Batch keys of cached inputs (FinetuneModule.features dispatches on them).
CACHED_KEYS = ("cached_features", "cached_hidden")
_SPLIT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class CachePlan:
    """Blocks ``0..cut-1`` are precomputed; ``cut == n_blocks`` caches the pooled features."""

    cut: int
    n_blocks: int
    block_names: tuple[str, ...]

    @property
    def kind(self) -> str:
        return "pooled" if self.cut == self.n_blocks else "tokens"

    def describe(self) -> str:
        last = self.block_names[self.cut - 1]
        if self.kind == "pooled":
            return f"all {self.n_blocks} blocks frozen: pooled features cached"
        return f"blocks 0-{self.cut - 1} ({self.block_names[0]} .. {last}) frozen: their outputs cached"


def plan_cache(model: Any, epochs: int) -> tuple[CachePlan | None, str]:
    """Where to cut for this run of ``epochs`` epochs, or None and why not."""
    names = list(model.block_names)
    n = len(names)
    strategy = model.strategy
    if strategy.uses_lora:
        return None, "LoRA adapters train inside every block, so no block's output stays fixed"
    trained: set[int] = set()
    for epoch in range(max(1, int(epochs))):
        trained |= set(strategy.trainable(epoch, n, names))
    cut = min(trained) if trained else n
    if cut == 0:
        return None, f"block 0 ({names[0]}) trains, so no block stays frozen for the whole run"
    backbone = model.backbone
    if cut < n and not backbone.can_split(cut):
        usable = [c for c in range(cut - 1, 0, -1) if backbone.can_split(c)]
        if not usable:
            return None, (
                f"{type(backbone).__name__} cannot resume from block {cut} ({names[cut]}); only fully frozen "
                f"encoders (linear probes) are cached for it"
            )
        cut = usable[0]
    plan = CachePlan(cut, n, tuple(names))
    return plan, plan.describe()


# ----- building an entry ------------------------------------------------------------------------
def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The same autocast the training step runs under, so cached and live prefixes agree."""
    if precision.startswith("bf16") and precision.endswith("mixed"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def _to(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, dict):
        return {k: _to(v, device) for k, v in inputs.items() if k != "labels"}
    return inputs.to(device) if hasattr(inputs, "to") else inputs


def _batches(n: int, lengths: np.ndarray | None, batch_size: int) -> Iterator[np.ndarray]:
    order = np.argsort(-lengths, kind="stable") if lengths is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _check_split(backbone: Any, inputs: Any, cut: int, state: dict[str, torch.Tensor]) -> None:
    """A cut must reproduce the backbone's own forward (guards adapters against model variants)."""
    whole = backbone(inputs).float()
    split = backbone.forward_suffix(state, cut).float()
    err = float((whole - split).abs().max() / whole.abs().max().clamp_min(1e-12))
    if err > _SPLIT_TOLERANCE:
        raise RuntimeError(
            f"{type(backbone).__name__}: running blocks 0-{cut - 1} and then the rest differs from the whole "
            f"forward by {err:.2e} (relative). Caching at this cut would change results; run with --no-cache "
            f"and please report the model."
        )


def cached_features(
    cache: FeatureCache,
    backbone: Any,
    dataset: Any,
    collate: Callable[[list[Any]], Any],
    plan: CachePlan,
    *,
    batch_size: int = 128,
    precision: str = "32-true",
    dtype: str = "float32",
    device: torch.device | str = "cpu",
) -> tuple[CacheEntry, dict[str, Any]]:
    """The cache entry of ``dataset`` at ``plan.cut``, built if missing; plus facts for the summary."""
    device = torch.device(device)
    lengths = getattr(dataset, "lengths", None)
    if plan.kind == "tokens" and lengths is None:
        raise ValueError("A token-level cache needs a dataset with per-row token counts (.lengths).")
    components = prefix_components(
        backbone, plan.cut, preprocessing=dataset.preprocessing, data_fingerprint=dataset.fingerprint(),
        precision=f"{precision}/{device.type}", dtype=dtype,
    )
    key = cache_key(components)
    started = time.perf_counter()
    entry = cache.open(key)
    hit = entry is not None
    if entry is None:
        with cache.building(key):  # one builder per entry: other processes (ranks, workers) wait, then read it
            entry = cache.open(key)
            hit = entry is not None
            if entry is None:
                entry = _build(cache, key, components, backbone, dataset, collate, plan, batch_size, precision,
                               dtype, device, lengths)
    info = {"key": key, "hit": hit, "kind": plan.kind, "cut": plan.cut, "rows": entry.n_rows,
            "bytes": entry.nbytes, "seconds": round(time.perf_counter() - started, 2)}
    return entry, info


def pooled_features(model: Any, loader: Any, cache_cfg: Any, batch_size: int, use_cache: bool = True,
                    progress: Callable[[Any], Any] | None = None) -> np.ndarray:
    """Pooled encoder features (eval mode) of every row of ``loader``'s dataset, as float32 ``[N, D]``.

    With the cache on (``cache_cfg``: a run's ``cache`` section) and rows that can be keyed, this is the cache's
    pooled entry for these weights and rows, read when present (e.g. left by a linear probe) and written
    otherwise; else one pass of ``model.get_embeddings`` over ``loader`` (wrapped in ``progress``, if given).
    """
    if use_cache and cache_cfg.enabled and hasattr(loader.dataset, "fingerprint"):
        n = len(model.block_names)
        entry, _ = cached_features(FeatureCache(cache_cfg.dir), model.backbone, loader.dataset, loader.collate_fn,
                                   CachePlan(n, n, tuple(model.block_names)), batch_size=batch_size,
                                   dtype=cache_cfg.dtype)
        return np.asarray(entry.values, dtype=np.float32)
    return model.get_embeddings(progress(loader) if progress else loader)[0].numpy().astype(np.float32, copy=False)


def _build(cache, key, components, backbone, dataset, collate, plan, batch_size, precision, dtype, device,
           lengths) -> CacheEntry:
    from headstart.train.batches import split_batch

    was_training = backbone.training
    backbone_device = next(backbone.parameters()).device
    backbone.eval().to(device)
    pooled = plan.kind == "pooled"
    try:
        with torch.inference_mode(), _autocast(precision, device):
            def compute(rows: np.ndarray, check: bool = False) -> tuple[np.ndarray, torch.Tensor, Any]:
                # the encoder's inputs of the batch, split from its labels as training splits them
                inputs = _to(split_batch(collate([dataset[int(i)] for i in rows]))[0], device)
                if pooled:
                    return rows, backbone(inputs).float().cpu(), None
                state = backbone.forward_prefix(inputs, plan.cut)
                if check:
                    _check_split(backbone, inputs, plan.cut, state)
                return rows, state["hidden"].float().cpu(), state["attention_mask"].cpu()

            batches = _batches(len(dataset), lengths, batch_size)
            first_rows = next(batches, None)
            if first_rows is None:
                raise ValueError("Cannot cache features of an empty dataset.")
            first = compute(first_rows, check=True)
            dim = int(first[1].shape[-1])

            def fill(writer: CacheWriter) -> None:
                for rows, values, mask in _chain(first, (compute(r) for r in batches)):
                    if pooled:
                        writer.write_rows(rows, values.numpy())
                        continue
                    counts = mask.sum(dim=1).tolist()
                    for j, row in enumerate(rows.tolist()):
                        if counts[j] != lengths[row] or bool(mask[j, : counts[j]].all()) is False:
                            raise ValueError(
                                f"row {row}: the attention mask is not {lengths[row]} leading ones; the token "
                                f"cache needs right-padded batches"
                            )
                        writer.write_tokens(row, values[j, : counts[j]].numpy())

            return cache.build(key, components, rows=len(dataset), dim=dim, dtype=dtype,
                               lengths=None if pooled else lengths, fill=fill)
    finally:
        backbone.to(backbone_device).train(was_training)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


# ----- training on an entry ---------------------------------------------------------------------
class CachedFeatureDataset(Dataset):
    """Rows of a cache entry (memory-mapped) with their labels; ``lengths`` as the raw dataset's."""

    def __init__(self, entry: CacheEntry, labels: Sequence[Any] | np.ndarray | None,
                 lengths: np.ndarray | None = None) -> None:
        if labels is not None and len(labels) != entry.n_rows:
            raise ValueError(f"{len(labels)} labels for a cache entry of {entry.n_rows} rows")
        self.entry = entry
        self.labels = list(labels) if labels is not None else None
        self.lengths = lengths

    def __len__(self) -> int:
        return self.entry.n_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"features": self.entry.row(index)}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A batch's rows (the DataLoader calls this once per batch): pooled rows come from one fancy-indexed
        read of the memory map instead of one memmap view per row, which dominated a cached probe's step."""
        if self.entry.offsets is not None:
            return [self[int(i)] for i in indices]
        rows = np.asarray(self.entry.values[np.asarray(indices, dtype=np.int64)])
        labels = self.labels
        return [{"features": r} if labels is None else {"features": r, "labels": labels[int(i)]}
                for r, i in zip(rows, indices, strict=True)]


class CachedCollator:
    """Stacks pooled rows, or right-pads token rows and rebuilds their attention mask."""

    def __init__(self, plan: CachePlan) -> None:
        self.kind = plan.kind
        self.cut = plan.cut

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        rows = [np.asarray(item["features"], dtype=np.float32) for item in items]
        if self.kind == "pooled":
            batch: dict[str, Any] = {"cached_features": torch.from_numpy(np.stack(rows))}
        else:
            width = max(r.shape[0] for r in rows)
            hidden = np.zeros((len(rows), width, rows[0].shape[1]), dtype=np.float32)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, r in enumerate(rows):
                hidden[i, : r.shape[0]] = r
                mask[i, : r.shape[0]] = 1
            batch = {"cached_hidden": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask),
                     "cache_cut": self.cut}
        if items and "labels" in items[0]:
            labels = np.asarray([item["labels"] for item in items])
            # class indices stay int64; numbers and per-task labels (NaN = missing) stay float32
            integer = labels.dtype.kind in "iub"
            batch["labels"] = torch.from_numpy(labels.astype(np.int64 if integer else np.float32))
        return batch
