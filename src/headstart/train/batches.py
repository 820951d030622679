"""Batches as the training path sees them: (inputs, labels), on a device, and a loader's labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["labels_of", "split_batch", "to_device"]


def split_batch(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """(inputs, labels) from a dict with ``labels``, an ``(x, y)`` pair, or bare inputs."""
    if isinstance(batch, dict):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return inputs, batch.get("labels")
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    return batch, None


def to_device(inputs: Any, device: torch.device) -> Any:
    """Tensors (also inside a dict, or objects with ``.to``) moved to ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if hasattr(inputs, "to"):
        return inputs.to(device)
    return inputs


def labels_of(loader: Any) -> np.ndarray | None:
    """The labels of a loader's rows: its dataset's ``labels`` / ``targets`` / ``y``, else one pass over it."""
    dataset = getattr(loader, "dataset", None)
    for attr in ("labels", "targets", "y"):
        values = getattr(dataset, attr, None)
        if values is not None:
            return np.asarray(values)
    collected = []
    for batch in loader:
        _, y = split_batch(batch)
        if y is None:
            return None
        collected.append(np.asarray(y))
    return np.concatenate(collected) if collected else None
