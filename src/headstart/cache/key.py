"""Content-addressed keys for the feature cache.

A cache entry holds the outputs of blocks ``0..k-1`` for every row of one dataset. Those outputs are
a function of exactly: the architecture, the weights of those blocks, where the cut is (and the
pooling when the cut is after the last block), the inputs the blocks see (token ids, so the
tokenizer, its settings, truncation and the data itself), the compute precision and the storage
dtype. The key hashes all of them, so changing any one gives a new entry and a stale one is never
read. Hashing the weights themselves (not a file path or a name) also catches a checkpoint
overwritten in place and a pretrained encoder loaded on top of the base model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["KEY_VERSION", "array_digest", "cache_key", "module_digest", "prefix_components"]

KEY_VERSION = 1  # bump when the layout of an entry or the meaning of a component changes
_DIGEST_SIZE = 16


def _hasher() -> Any:
    return hashlib.blake2b(digest_size=_DIGEST_SIZE)


def module_digest(modules: Iterable[nn.Module]) -> str:
    """Hash of every parameter and buffer (name, dtype, shape, bytes) of ``modules``, in order."""
    h = _hasher()
    seen: set[int] = set()
    for i, module in enumerate(modules):
        tensors = list(module.named_parameters()) + list(module.named_buffers())
        for name, tensor in tensors:
            if id(tensor) in seen:  # tied weights count once
                continue
            seen.add(id(tensor))
            data = tensor.detach().to("cpu").contiguous()
            h.update(f"{i}/{name}/{data.dtype}/{tuple(data.shape)};".encode())
            # view as bytes: works for every dtype numpy lacks (bfloat16)
            h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def array_digest(*arrays: np.ndarray | None) -> str:
    """Hash of numpy arrays (dtype, shape and bytes); ``None`` entries are hashed as absent."""
    h = _hasher()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}/{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _short_digest(value: object) -> str:
    h = _hasher()
    h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()


def prefix_components(
    backbone: Any,
    k: int,
    *,
    preprocessing: dict[str, Any],
    data_fingerprint: str,
    precision: str,
    dtype: str,
) -> dict[str, Any]:
    """Everything the cached outputs of blocks ``0..k-1`` depend on (readable, for the manifest)."""
    blocks = backbone.blocks()
    n = len(blocks)
    if not 1 <= k <= n:
        raise ValueError(f"cache cut k={k} must be between 1 and the number of blocks ({n}).")
    arch = backbone.architecture()
    if k < n:
        arch = {key: value for key, value in arch.items() if key != "pooling"}  # pooling runs after the cut
    return {
        "version": KEY_VERSION,
        "kind": "pooled" if k == n else "tokens",
        "cut": k,
        "n_blocks": n,
        "blocks": [name for name, _ in blocks[:k]],
        "architecture": _short_digest(arch),
        "backbone_type": arch.get("type"),
        "weights": module_digest(module for _, module in blocks[:k]),
        "adapters": _adapter_scalings(module for _, module in blocks[:k]),
        "preprocessing": preprocessing,
        "data": data_fingerprint,
        "precision": precision,
        "dtype": dtype,
        "torch": torch.__version__.split("+")[0],
    }


def _adapter_scalings(modules: Iterable[nn.Module]) -> list[Any]:
    """LoRA scaling (alpha / r) is not a tensor, so the weight hash alone would miss it."""
    return [[i, name, m.scaling] for i, module in enumerate(modules)
            for name, m in module.named_modules() if isinstance(getattr(m, "scaling", None), dict)]


def cache_key(components: dict[str, Any]) -> str:
    """The entry name: a hash of the canonical JSON of the components."""
    return _short_digest(components)[:24]
