"""Frozen weights stored once on disk, however many runs share them.

A linear probe, a partial run or a LoRA run writes the weights no step can change to
``checkpoints/frozen.safetensors``. Every run of a ``compare`` grid (and every fold of a ``stack``) over
the same encoder writes the same bytes: a 4-run toy grid stored 4 x 90 MB. So the file is written once
into a content-addressed store next to the feature cache (``<store>/<blake2b>.safetensors``) and each
run's ``frozen.safetensors`` is a **hard link** to it:

* the run directory still holds a real file, so reading it, the reload round-trip check and copying the
  folder elsewhere (``cp -r``, ``rsync``, an archive: they copy the bytes) all work as before;
* moving the run directory within a file system keeps the link; deleting the store entry (or the whole
  cache) leaves the runs' files intact, because a hard link is a name of the same data, not a pointer;
* where a hard link is impossible (another file system, no permission), the run gets its own copy.

``frozen.json`` beside the file records its digest (checked on every load) and the store path. headstart
never changes a weights file in place (every write replaces it), so runs cannot affect each other's
weights; damage on disk to the shared data shows under every name, and the digest check reports it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from headstart.fileio import atomic_path, content_digest, write_json
from headstart.train.checkpoint import save_weights, sidecar_path, write_safetensors

__all__ = ["WEIGHTS_ENV_VAR", "default_weights_dir", "store_frozen_weights"]

WEIGHTS_ENV_VAR = "HEADSTART_WEIGHTS_DIR"


def default_weights_dir(cache_dir: str | Path | None = None) -> Path:
    """``$HEADSTART_WEIGHTS_DIR``, else a ``weights`` folder beside the feature cache directory."""
    if os.environ.get(WEIGHTS_ENV_VAR):
        return Path(os.environ[WEIGHTS_ENV_VAR]).expanduser()
    from headstart.cache.store import default_cache_dir

    features = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return features.parent / "weights"


def store_frozen_weights(state: dict[str, torch.Tensor], path: str | Path, store: str | Path | None) -> str:
    """Write ``state`` to ``path`` as a hard link into ``store`` (a copy when linking fails or no store).

    Returns ``"shared"`` or ``"copy"`` (what ``path`` is), for the run's summary.
    """
    path = Path(path)
    if store is None:
        save_weights(state, path)
        return "copy"
    store = Path(store)
    tmp = None
    try:
        store.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming.", suffix=".safetensors", dir=store)
        os.close(fd)
        write_safetensors(state, tmp)
        digest = content_digest(tmp)
        target = store / f"{digest['blake2b']}.safetensors"
        if target.exists() and content_digest(target) == digest:
            os.unlink(tmp)
        else:  # new, or a damaged entry: replaced (runs linked to the damaged data keep failing their check)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        tmp = None
        # The sidecar first: a crash between the two never leaves a weights file without its digest.
        write_json(sidecar_path(path), {"content": digest, "store": str(target)})
        with atomic_path(path) as link:
            os.unlink(link)
            os.link(target, link)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        save_weights(state, path)
        return "copy"
    return "shared"
