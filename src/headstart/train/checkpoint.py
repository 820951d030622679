"""Reading and writing weights safely.

* Writes are atomic (temp file in the same directory + ``os.replace``): a crash never leaves a
  half-written checkpoint where a good one was.
* Every file has a JSON sidecar (``best.json`` beside ``best.safetensors``, ``last.json`` beside
  ``last.ckpt``) recording its size and BLAKE2b digest; reads verify it, so a damaged file is a
  ``CheckpointError`` naming the file, never weights that load silently. The sidecar is written before
  the file is renamed into place and also keeps the previous digest, so a crash between the two renames
  leaves a pair that still verifies. A run's own files (``require_sidecar``) must have their sidecar: a
  deleted ``best.json`` would otherwise let a damaged ``best.safetensors`` load unchecked. Files from
  elsewhere (a user's ``--pretrain`` weights) load without one.
* The same state always gives the same bytes (the header's JSON is written with sorted keys), so the
  frozen-weights store can share one file between runs by its digest.
* Reads never execute pickled code: safetensors, or ``torch.load(weights_only=True)`` (DESIGN rule 7).
* Weights that no step of a run can change (static-frozen blocks, LoRA base weights) are written once per
  run to ``frozen.safetensors``; best / top-k / last checkpoints hold only the rest and name that file in
  their metadata, and ``read_state_dict`` merges it back, so every reader sees whole state dicts.
* Loading an encoder from another model's checkpoint aligns key prefixes (``model.``,
  ``seq_encoder.``, ``backbone.`` ...) automatically and reports matched / missing / unexpected /
  shape-mismatched keys, so a silent partial load cannot happen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.errors import CheckpointError
from headstart.fileio import atomic_path, content_digest, write_json

__all__ = [
    "FROZEN_WEIGHTS",
    "KeyReport",
    "atomic_checked_path",
    "check_key_report",
    "explain_torch_load_error",
    "load_encoder_weights",
    "match_state_dict",
    "read_linked",
    "read_state_dict",
    "save_weights",
    "sidecar_path",
    "verify_file",
    "write_safetensors",
]

FROZEN_WEIGHTS = "frozen.safetensors"
_LINKS_KEY = "headstart_links"  # safetensors metadata: sibling files holding the rest of the state dict


def save_weights(
    state: dict[str, torch.Tensor],
    path: str | Path,
    sidecar: dict[str, Any] | None = None,
    links: Iterable[str] = (),
) -> None:
    """Atomically write a safetensors file and its ``<name>.json`` sidecar (``sidecar`` + the file's digest).

    ``links`` names files beside ``path`` that hold the remaining tensors (``frozen.safetensors``);
    ``read_state_dict`` merges them, so a checkpoint need not repeat weights the run never changes.
    """
    with atomic_checked_path(path, sidecar) as tmp:
        write_safetensors(state, tmp, links)


def write_safetensors(state: dict[str, torch.Tensor], path: str | Path, links: Iterable[str] = ()) -> None:
    """The bytes of a weights file (not atomic: ``save_weights`` wraps it). Same state, same bytes.

    safetensors writes its ``__metadata__`` map in a random key order (a hash map, seeded per process and
    per map), so the header is rewritten with sorted keys afterwards; the weights store shares frozen files
    by their digest, which needs identical bytes.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for key, value in state.items():
        t = value.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        # safetensors refuses shared storage (tied weights, views into one buffer, even at different
        # offsets): store a copy under each name after the first.
        tensors[key] = t.clone() if ptr in seen and t.numel() else t
        seen.setdefault(ptr, key)
    metadata = {"format": "pt", "producer": "headstart"}
    links = [str(name) for name in links]
    if links:
        metadata[_LINKS_KEY] = json.dumps(links)
    save_file(tensors, str(path), metadata=metadata)  # streams the tensors: no copy of the state in memory
    _sort_header(Path(path))


def _sort_header(path: Path) -> None:
    """Rewrite a safetensors header in place as JSON with sorted keys, padded to its length.

    Only the key order changes, and Python's compact JSON escapes strings as safetensors (serde_json) does,
    so the sorted header has the same length and the tensor data (offsets relative to its start) stays put.
    """
    with open(path, "r+b") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size:
            raise CheckpointError(
                f"Writing '{path}': the sorted safetensors header is {len(text)} bytes where safetensors wrote "
                f"{size}, so it cannot be rewritten in place (a safetensors version that encodes headers "
                f"differently?). Report this with `pip show safetensors`."
            )
        fh.seek(8)
        fh.write(text.ljust(size, b" "))  # safetensors pads its header with spaces too


def sidecar_path(path: str | Path) -> Path:
    """``best.safetensors`` -> ``best.json``, ``last.ckpt`` -> ``last.json``."""
    return Path(path).with_suffix(".json")


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    return _read_record(sidecar_path(path))


def _read_record(side: Path) -> dict[str, Any] | None:
    if not side.exists():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # a damaged sidecar cannot vouch for the file; verify_file says so
    return data if isinstance(data, dict) else None


@contextmanager
def atomic_checked_path(path: str | Path, sidecar: dict[str, Any] | None = None) -> Iterator[str]:
    """Like ``atomic_path``, and record the written file's digest in its JSON sidecar (plus ``sidecar``).

    The sidecar is replaced before the file: it names the new digest and keeps the previous one, so a crash
    between the two renames leaves the old file with a sidecar that still vouches for it.
    """
    path = Path(path)
    before = _read_sidecar(path)
    with atomic_path(path) as tmp:
        yield tmp
        record = dict(sidecar or {}, content=content_digest(tmp))
        if before is not None and isinstance(before.get("content"), dict) and path.exists():
            record["previous_content"] = before["content"]
        write_json(sidecar_path(path), record)


def verify_file(path: str | Path, where: str = "checkpoint", require_sidecar: bool | None = None) -> None:
    """Raise a ``CheckpointError`` when ``path`` does not match the digest its sidecar recorded.

    ``require_sidecar``: the file is a run's own checkpoint, so a missing sidecar is an error too (it was
    written with one; deleted, a damaged file would load unchecked). ``None`` decides from where the file
    is: in the ``checkpoints/`` folder of a headstart run directory (beside ``config.yaml`` and
    ``labels.json``) it is required. Foreign files (``--pretrain`` weights, exported encoders) without a
    sidecar are not checked here; their readers still refuse what does not parse.
    """
    path = Path(path)
    side = sidecar_path(path)
    if not side.exists():
        if require_sidecar is None:
            require_sidecar = _in_run_checkpoints(path)
        if require_sidecar and not _written_before_digests(path):
            raise CheckpointError(_missing_sidecar_message(path, where))
        return
    record = _read_sidecar(path)
    if record is None:
        raise CheckpointError(
            f"{where} '{path}': its sidecar '{side.name}' is not readable JSON, so the file cannot be verified. "
            f"Restore both files from a copy, or retrain (--overwrite)."
        )
    expected = [r for r in (record.get("content"), record.get("previous_content")) if isinstance(r, dict)]
    if not expected:
        return
    actual = content_digest(path)
    if any(actual == {k: r.get(k) for k in ("blake2b", "bytes")} for r in expected):
        return
    want = expected[0]
    size = (f"{actual['bytes']} bytes where {want.get('bytes')} were written (truncated or extended)"
            if actual["bytes"] != want.get("bytes") else
            f"same size ({actual['bytes']} bytes) but different content (blake2b {actual['blake2b'][:12]}... "
            f"vs {str(want.get('blake2b'))[:12]}... recorded)")
    raise CheckpointError(
        f"{where} '{path}' is damaged: it does not match the digest recorded in '{side.name}' when it was written: "
        f"{size}. Loading it could give silently wrong weights, so headstart refuses. Copy the run's "
        f"checkpoints/ folder again from a good copy, point to another checkpoint, or retrain (--overwrite)."
    )


def _in_run_checkpoints(path: Path) -> bool:
    """True for a file in the ``checkpoints/`` folder (or its ``top/``) of a headstart run directory (``fit``
    writes ``config.yaml`` and ``labels.json`` beside that folder before any checkpoint)."""
    folder = path.parent.parent if path.parent.name == "top" else path.parent
    run = folder.parent
    return folder.name == "checkpoints" and (run / "config.yaml").is_file() and (run / "labels.json").is_file()


def _written_before_digests(path: Path) -> bool:
    """True when the other sidecars beside ``path`` exist and none records a digest: a run of a headstart
    version that wrote ``frozen.safetensors`` and ``last.ckpt`` without sidecars (and ``best.json`` without
    a digest). Such files were never verifiable; refusing them would only break old runs."""
    records = [_read_record(side) for side in path.parent.glob("*.json") if side != sidecar_path(path)]
    records = [r for r in records if r is not None]  # an unreadable sidecar proves nothing either way
    return bool(records) and not any("content" in r for r in records)


def _missing_sidecar_message(path: Path, where: str) -> str:
    side = sidecar_path(path)
    older = ""
    if path.name in (FROZEN_WEIGHTS, "last.ckpt"):
        older = (f" (headstart versions before digest sidecars wrote {path.name} without one; such a run still "
                 f"loads while its best.json is there and records no digest, which is not the case here)")
    return (
        f"{where} '{path}' cannot be verified: its sidecar '{side.name}', which records the file's digest, is "
        f"missing (looked for {side}){older}. headstart writes it with every checkpoint of a run, and without it "
        f"a damaged file would load silently wrong weights, so headstart refuses. Restore '{side.name}' from "
        f"where the run was copied (copy the run's whole checkpoints/ folder, not single files), or rerun the "
        f"fit (--overwrite)."
    )


def read_state_dict(path: str | Path, where: str = "checkpoint",
                    require_sidecar: bool | None = None) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch checkpoint (Lightning ``state_dict`` nesting handled).

    ``require_sidecar`` as in ``verify_file``: True for a run's own checkpoints, False for foreign weights,
    None to decide from the file's folder. Linked ``frozen.safetensors`` files always need theirs.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{where} '{path}' does not exist (resolved to {path.resolve()}). Check the path.")
    if path.is_dir():
        for name in ("model.safetensors", "best.safetensors", "checkpoints/best.safetensors", "pytorch_model.bin"):
            if (path / name).exists():
                return read_state_dict(path / name, where, require_sidecar)
        raise CheckpointError(
            f"{where} '{path}' is a directory without model.safetensors, best.safetensors or pytorch_model.bin; "
            f"point it at the weights file."
        )
    verify_file(path, where, require_sidecar)
    if path.suffix == ".safetensors":
        state, links = _read_safetensors(path, where)
        for name in links:
            state = read_linked(state, path.parent / name, where=f"{where} '{path}'")
        return state
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{where} '{path}' could not be read with torch.load(weights_only=True): {explain_torch_load_error(exc)}. "
            f"headstart never unpickles arbitrary objects; point to a weights file (.safetensors, or a .pt/.bin "
            f"written with torch.save(model.state_dict(), path)), copy a damaged one again, or re-save it as "
            f"safetensors."
        ) from None
    for key in ("state_dict", "model_state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = type(obj).__name__
        if isinstance(obj, dict):
            found = "a dict with non-tensor values under " + ", ".join(
                repr(k) for k, v in list(obj.items()) if not isinstance(v, torch.Tensor)
            )[:200]
        raise CheckpointError(
            f"{where} '{path}' does not hold a state_dict of tensors (found {found}). Save the weights with "
            f"torch.save(model.state_dict(), path) or as safetensors."
        )
    return obj


def _read_safetensors(path: Path, where: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            links = json.loads((fh.metadata() or {}).get(_LINKS_KEY, "[]"))
            return {key: fh.get_tensor(key) for key in fh.keys()}, [str(n) for n in links]  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(
            f"{where} '{path}' is not a readable safetensors file ({' '.join(str(exc).split())}). The file is "
            f"damaged or truncated (an interrupted copy?); copy it again, or point to another checkpoint."
        ) from None


def read_linked(state: dict[str, torch.Tensor], linked: Path, where: str) -> dict[str, torch.Tensor]:
    """``state`` plus the tensors of ``linked`` (a run's ``frozen.safetensors``) that it lacks.

    The linked file is always a run's own, so its sidecar (``frozen.json``) is required."""
    if not linked.exists():
        raise CheckpointError(
            f"{where} stores only the weights its run could change; the frozen ones live in '{linked.name}' beside "
            f"it, which is missing (looked for {linked.resolve()}). Copy the whole checkpoints/ folder of the run, "
            f"not single files."
        )
    verify_file(linked, f"{where}: its frozen weights", require_sidecar=True)
    frozen, _ = _read_safetensors(linked, f"{where}: its frozen weights")
    return {**frozen, **state}


def explain_torch_load_error(exc: Exception) -> str:
    """What a ``torch.load(weights_only=True)`` failure means, in our words: torch's own text advises
    retrying with ``weights_only=False``, which would run whatever the file pickled."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", text)
    if found:
        return (f"it contains a pickled {found.group(1).rstrip('.')} object, not only tensors (loading it would "
                f"run code, so it is refused)")
    if "central directory" in text or "PytorchStreamReader" in text or isinstance(exc, EOFError):
        return "the file is truncated or damaged (not a complete PyTorch zip archive)"
    if "WeightsUnpickler" in text or "invalid load key" in text or "Unsupported operand" in text:
        return "the file is not a PyTorch checkpoint (its bytes do not parse as one; damaged, or another format)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return first.rstrip(".")


@dataclass
class KeyReport:
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    source_prefix: str = ""
    target_prefix: str = ""

    def format(self, limit: int = 8) -> str:
        def show(items: Iterable[Any]) -> str:
            items = list(items)
            head = ", ".join(str(i) for i in items[:limit])
            return head + (f", ... (+{len(items) - limit})" if len(items) > limit else "")

        lines = [
            f"Encoder key report: {len(self.matched)} matched, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.shape_mismatched)} shape-mismatched"
        ]
        if self.source_prefix or self.target_prefix:
            lines.append(f"  prefix aligned: '{self.source_prefix}' (checkpoint) -> '{self.target_prefix}' (model)")
        if self.missing:
            lines.append(f"  missing (kept as initialised): {show(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (ignored): {show(self.unexpected)}")
        if self.shape_mismatched:
            lines.append(
                "  shape-mismatched (not loaded): "
                + show(f"{k} ckpt{list(a)} vs model{list(b)}" for k, a, b in self.shape_mismatched)
            )
        return "\n".join(lines)


def _prefixes(keys: Iterable[str], depth: int = 3) -> set[str]:
    out = {""}
    for key in keys:
        parts = key.split(".")
        for k in range(1, min(depth, len(parts) - 1) + 1):
            out.add(".".join(parts[:k]) + ".")
    return out


def match_state_dict(
    target: dict[str, torch.Tensor], source: dict[str, torch.Tensor]
) -> tuple[KeyReport, dict[str, torch.Tensor]]:
    """Find the prefix rewrite (strip one, add another) that matches the most keys.

    A key reduced to a bare leaf name (``weight``) only counts when both prefixes are at most one
    component deep (wrappers such as ``model.``/``module.``): otherwise ``foo.weight`` would "align" with
    ``encoder.norm.weight`` and load an unrelated tensor whose shape happens to fit.
    """
    best: tuple[int, str, str] = (-1, "", "")
    for sp in _prefixes(source):
        stripped = {k[len(sp):] for k in source if k.startswith(sp)}
        for tp in _prefixes(target):
            shallow = sp.count(".") <= 1 and tp.count(".") <= 1
            score = sum(1 for k in stripped if tp + k in target and (shallow or "." in k))
            if score > best[0] or (score == best[0] and len(sp) + len(tp) < len(best[1]) + len(best[2])):
                best = (score, sp, tp)
    _, sp, tp = best
    report = KeyReport(source_prefix=sp, target_prefix=tp)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if not key.startswith(sp) or tp + key[len(sp):] not in target:
            report.unexpected.append(key)
            continue
        tkey = tp + key[len(sp):]
        if tuple(target[tkey].shape) != tuple(value.shape):
            report.shape_mismatched.append((tkey, tuple(value.shape), tuple(target[tkey].shape)))
            continue
        mapped[tkey] = value
        report.matched.append(tkey)
    hit = set(report.matched) | {k for k, _, _ in report.shape_mismatched}
    report.missing = [k for k in target if k not in hit]
    return report, mapped


def load_encoder_weights(module: nn.Module, path: str | Path, strict: bool = False) -> KeyReport:
    """Load what fits from ``path`` into ``module``; raise when nothing (or, if strict, not all) fits."""
    source = read_state_dict(path, where="The pretrained encoder checkpoint (pretrain / --pretrain)")
    target = module.state_dict()
    report, mapped = match_state_dict(target, source)
    check_key_report(report, path, list(source), list(target), strict)
    module.load_state_dict(mapped, strict=False)
    return report


def check_key_report(report: KeyReport, path: str | Path, source_keys: list[str], target_keys: list[str],
                     strict: bool = False) -> None:
    """Raise the explanation when nothing of a checkpoint fits (or, if strict, not everything)."""
    source, target = source_keys, target_keys
    if not report.matched and report.shape_mismatched:
        raise CheckpointError(
            f"No tensor of the checkpoint '{path}' fits the encoder: {len(report.shape_mismatched)} key(s) align by "
            f"name but every shape differs, so the architecture settings (widths, vocabulary or input sizes) do not "
            f"match the model that wrote the checkpoint.\n{report.format()}\nBuild the backbone with the same sizes "
            f"as the checkpoint's model, or drop pretrain (--pretrain)."
        )
    if not report.matched:
        raise CheckpointError(
            f"No key of the checkpoint '{path}' matches the encoder ({len(source)} checkpoint keys, "
            f"{len(target)} model keys), even after aligning prefixes. Checkpoint keys look like "
            f"{list(source)[:3]}; model keys look like {list(target)[:3]}. Is this a checkpoint of the same "
            f"architecture? Point pretrain (--pretrain) at encoder weights of this backbone, or drop it to start "
            f"from the backbone's own weights; `headstart inspect CONFIG` shows the model's modules."
        )
    if strict and (report.missing or report.shape_mismatched or report.unexpected):
        raise CheckpointError(
            f"strict loading of '{path}' failed.\n{report.format()}\nPass strict=False to load the matching "
            f"keys only, or fix the architecture config so the shapes agree."
        )

