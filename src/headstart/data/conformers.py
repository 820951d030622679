"""Uni-Mol inputs: RDKit 3-D conformers generated once per SMILES and cached by content, then unimol-tools' tokens.

The conformer of a SMILES is made by unimol-tools' own ``inner_smi2coords`` (``AddHs``, ETKDG
``EmbedMolecule(randomSeed=seed)``, MMFF optimisation; when the 3-D embedding fails, RDKit's 2-D
coordinates; hydrogens removed when ``remove_hs``), so features match what unimol-tools feeds its models.
Embedding costs tens of milliseconds a molecule, so each result is stored once on disk:

* cache layout: ``<cache_dir>/<key[:2]>/<key>.npz`` with ``atoms`` (element symbols), ``coordinates``
  (float32 ``[atoms, 3]``), ``status`` (``3d``, ``2d`` = unimol-tools' fallback when the 3-D embedding failed,
  ``failed`` = all-zero coordinates) and ``smiles``; ``key`` is the sha256 of (format, SMILES, seed, remove_hs,
  mode, unimol-tools version, RDKit version), so another seed or library version never reads a stale entry.
  Files are written to a temp file beside the target and renamed (``os.replace``): concurrent runs and crashes
  never leave half a file. ``cache_dir`` defaults to ``$HEADSTART_CACHE_DIR/conformers``, else
  ``~/.cache/headstart/conformers`` (``$XDG_CACHE_HOME`` respected).
* :class:`UniMolDataset` turns a conformer into unimol-tools' inputs with its ``coords2unimol`` (tokens
  ``[CLS] atoms [SEP]``, centred coordinates, distance matrix, edge types) on the fly, and
  :func:`collate_unimol` pads a batch with unimol-tools' ``pad_1d_tokens`` / ``pad_2d`` / ``pad_coords``.
  Molecules above ``max_atoms`` atoms are cropped to a random subset of atoms, as unimol-tools does, but
  seeded per SMILES (unimol-tools draws from numpy's global RNG), so every run sees the same crop.

Two unimol-tools behaviours are corrected here (:func:`load_unimol_dictionary`, :func:`import_unimol_tools`):

* unimol-tools 0.1.6's ``Dictionary`` adds ``[CLS] [UNK] [PAD] [SEP]`` as symbols 0-3 before reading the file,
  so the published ``mol.dict.txt`` (``[PAD] [CLS] [SEP] [UNK] C N O ...``) maps ``[CLS]`` to row 0 of the
  checkpoint's token embedding, which Uni-Core trained as ``[PAD]`` (Uni-Core's ``Dictionary``, used in
  pre-training, numbers the symbols in file order). :func:`load_unimol_dictionary` numbers them in file order
  again (``[PAD]`` = 0, ``[CLS]`` = 1, ``[SEP]`` = 2, ``[UNK]`` = 3, then ``[MASK]`` appended, as unimol-tools
  does), which is what the published checkpoints were trained with.
* importing unimol-tools changes the process: it ignores every Python warning (``warnings.filterwarnings
  ('ignore')``), sets the root logger to NOTSET, turns RDKit's warning and error logs off, adds a console and a
  file handler to its logger and creates ``./logs``. :func:`import_unimol_tools` imports it once and undoes all
  of that (its own messages then go through the root logger at WARNING and above).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from headstart.data.molecules import check_labels
from headstart.errors import ConfigError, DataError
from headstart.fileio import atomic_path

__all__ = [
    "CONFORMER_FORMAT",
    "Conformer",
    "ConformerStats",
    "UniMolCollator",
    "UniMolDataset",
    "collate_unimol",
    "conformer_cache_dir",
    "conformer_key",
    "dictionary_digest",
    "generate_conformers",
    "import_unimol_tools",
    "load_unimol_dictionary",
]

log = logging.getLogger("headstart")

CONFORMER_FORMAT = 1  # bump when what a cache file holds, or how it is made, changes
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]")
_UNIMOL_LOGGER = "Uni-Mol Tools"
_AUTO_WORKERS_FROM = 64  # misses from which generate_conformers(workers=None) uses a process pool


# ----- importing unimol-tools without its side effects ---------------------------------------------
_imported = False


def _rdkit_enabled_logs() -> list[str]:
    from rdkit import rdBase

    status = rdBase.LogStatus() if hasattr(rdBase, "LogStatus") else ""
    return [line.split(":")[0] for line in status.splitlines() if line.endswith(":enabled")]


def import_unimol_tools() -> None:
    """Import unimol-tools (once), then undo what its import does to the process (see the module docstring).

    Import unimol-tools modules only after calling this. Costs ~5 s the first time (it imports pandas,
    scikit-learn, numba and huggingface_hub).
    """
    global _imported
    if _imported:
        return
    try:
        from rdkit import RDLogger
    except ImportError:
        raise ConfigError("Uni-Mol needs RDKit and unimol-tools: pip install -c constraints.txt rdkit "
                          "unimol_tools.") from None
    root_level = logging.root.level
    rdkit_on = _rdkit_enabled_logs()
    logs_dir = Path.cwd() / "logs"
    had_logs_dir = logs_dir.exists()
    try:
        with warnings.catch_warnings():  # restores the filters unimol_tools.data.conformer wipes
            for module in ("unimol_tools", "unimol_tools.data.conformer", "unimol_tools.models.unimol"):
                importlib.import_module(module)  # the package __init__ alone imports nearly everything
    except ImportError as exc:
        raise ConfigError(f"Uni-Mol needs unimol-tools, which cannot be imported ({exc}). Install it with: pip "
                          f"install -c constraints.txt unimol_tools.") from None
    finally:
        logging.root.setLevel(root_level)
        for name in rdkit_on:
            RDLogger.EnableLog(name)
        unimol_log = logging.getLogger(_UNIMOL_LOGGER)
        for handler in list(unimol_log.handlers):
            unimol_log.removeHandler(handler)
            handler.close()
        unimol_log.setLevel(logging.WARNING)
        unimol_log.propagate = True
        logging.getLogger("unimol_tools").setLevel(logging.WARNING)  # Dictionary's "Duplicate word" notes
        if not had_logs_dir:
            with contextlib.suppress(OSError):
                logs_dir.rmdir()  # only when empty: never anything unimol-tools (or anyone) wrote there
    _imported = True


def _unimol_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unimol_tools")
    except PackageNotFoundError:  # pragma: no cover - an uninstalled checkout
        return "unknown"


def _rdkit_version() -> str:
    from rdkit import rdBase

    return str(rdBase.rdkitVersion)


# ----- the token dictionary ------------------------------------------------------------------------
def load_unimol_dictionary(path: str | os.PathLike[str]) -> Any:
    """unimol-tools ``Dictionary`` of a Uni-Mol ``dict.txt``, numbered in file order (Uni-Core's numbering, the
    one the published checkpoints were trained with), with ``[MASK]`` appended as unimol-tools does.

    Lines are ``<token>`` or ``<token> <count>``; the file must list ``[PAD]`` first (as every published Uni-Mol
    dictionary does: batches are padded with id 0) and ``[CLS] [SEP] [UNK]``.
    """
    import_unimol_tools()
    from unimol_tools.data.dictionary import Dictionary

    source = Path(path)
    d = Dictionary()
    d.symbols, d.count, d.indices = [], [], {}  # drop the specials 0.1.6 pre-adds: file order decides
    try:
        d.add_from_file(str(source))
    except (OSError, ValueError, UnicodeError) as exc:
        raise ConfigError(f"The Uni-Mol dictionary '{source}' cannot be read ({type(exc).__name__}: {exc}). Expected "
                          f"the dict.txt published with the weights (mol.dict.txt: one token per line, [PAD] [CLS] "
                          f"[SEP] [UNK] C N O ...).") from None
    missing = [t for t in SPECIAL_TOKENS if t not in d.indices]
    if missing or d.pad() != 0:
        what = f"lacks {', '.join(missing)}" if missing else f"has [PAD] at line {d.pad() + 1}, not first"
        raise ConfigError(f"The Uni-Mol dictionary '{source}' {what} ({len(d)} tokens read, first: "
                          f"{' '.join(d.symbols[:6])}). Use the dict.txt published with the weights (mol.dict.txt "
                          f"from https://huggingface.co/dptech/Uni-Mol-Models: [PAD] [CLS] [SEP] [UNK] C N O ...).")
    d.add_symbol("[MASK]", is_special=True)
    return d


def dictionary_digest(dictionary: Any) -> str:
    """Short hash of the token list in index order (what token ids mean)."""
    return hashlib.sha256("\n".join(dictionary.symbols).encode()).hexdigest()[:16]


# ----- conformers and their cache ------------------------------------------------------------------
class Conformer(NamedTuple):
    atoms: np.ndarray  # element symbols [A] (unicode)
    coordinates: np.ndarray  # float32 [A, 3]
    status: str  # "3d", "2d" (3-D embedding failed: RDKit 2-D coordinates), "failed" (all zeros)


@dataclass
class ConformerStats:
    """Counts over the unique SMILES of one :func:`generate_conformers` call."""

    molecules: int = 0  # rows asked for
    unique: int = 0
    cached: int = 0  # read from the cache
    computed: int = 0  # embedded now (RDKit) and written to the cache
    fallback_2d: int = 0  # 3-D embedding failed: 2-D coordinates, as unimol-tools does
    failed: int = 0  # no coordinates at all (zeros), as unimol-tools does
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def conformer_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$HEADSTART_CACHE_DIR/conformers``, else ``~/.cache/headstart/conformers``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HEADSTART_CACHE_DIR"):
        return Path(os.environ["HEADSTART_CACHE_DIR"]).expanduser() / "conformers"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "headstart" / "conformers"


@lru_cache(maxsize=1)
def _versions() -> tuple[str, str]:
    return _unimol_version(), _rdkit_version()


def conformer_key(smiles: str, seed: int, remove_hs: bool, mode: str) -> str:
    """sha256 of everything the conformer depends on."""
    unimol, rdkit = _versions()
    payload = {"format": CONFORMER_FORMAT, "smiles": smiles, "seed": int(seed), "remove_hs": bool(remove_hs),
               "mode": mode, "unimol_tools": unimol, "rdkit": rdkit}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _status(coordinates: np.ndarray) -> str:
    if coordinates.size and not coordinates.any():
        return "failed"
    if len(coordinates) > 1 and not coordinates[:, 2].any():
        return "2d"
    return "3d"


def _embed(smiles: str, seed: int, mode: str, remove_hs: bool) -> Conformer | None:
    """One conformer by unimol-tools' ``inner_smi2coords``; None when RDKit cannot read the SMILES."""
    import_unimol_tools()
    from rdkit import Chem, rdBase
    from unimol_tools.data import conformer as unimol_conformer

    with rdBase.BlockLogs():
        if not smiles or Chem.MolFromSmiles(smiles) is None:
            return None
        # its 'replace with zeros' note goes to stdout: counted as status 'failed' instead
        with contextlib.redirect_stdout(io.StringIO()):
            atoms, coordinates, _ = unimol_conformer.inner_smi2coords(smiles, seed=seed, mode=mode,
                                                                       remove_hs=remove_hs)
    coordinates = np.asarray(coordinates, dtype=np.float32).reshape(-1, 3)
    return Conformer(np.asarray(atoms, dtype=str), coordinates, _status(coordinates))


def _embed_args(args: tuple[str, int, str, bool]) -> Conformer | None:
    return _embed(*args)


def _read(path: Path, smiles: str) -> Conformer | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            atoms, coordinates = data["atoms"], data["coordinates"]
            status, stored = str(data["status"]), str(data["smiles"])
    except (OSError, ValueError, KeyError, EOFError):  # damaged or foreign file: made again
        return None
    if stored != smiles or coordinates.shape != (len(atoms), 3):
        return None
    return Conformer(atoms.astype(str), coordinates.astype(np.float32), status)


def _write(path: Path, smiles: str, conf: Conformer) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: numpy adds no '.npz' suffix
        np.savez(fh, atoms=conf.atoms, coordinates=conf.coordinates, status=np.array(conf.status),
                 smiles=np.array(smiles))


def generate_conformers(
    smiles: Sequence[str],
    *,
    seed: int = 42,
    remove_hs: bool = True,
    mode: str = "fast",
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> tuple[list[Conformer], ConformerStats]:
    """One conformer per SMILES (duplicates embedded once), read from the cache or embedded and cached.

    ``workers``: processes embedding the misses; None = one per CPU (at most 8) from 64 misses on, else 1.
    SMILES RDKit cannot read are a DataError listing them (validate and drop them before, see
    ``data.molecules.invalid``).
    """
    started = time.perf_counter()
    smiles = [str(s) for s in smiles]
    root = conformer_cache_dir(cache_dir)
    unique = list(dict.fromkeys(smiles))
    stats = ConformerStats(molecules=len(smiles), unique=len(unique))
    found: dict[str, Conformer] = {}
    paths: dict[str, Path] = {}
    for s in unique:
        key = conformer_key(s, seed, remove_hs, mode)
        paths[s] = root / key[:2] / f"{key}.npz"
        conf = _read(paths[s], s) if paths[s].exists() else None
        if conf is not None:
            found[s] = conf
    stats.cached = len(found)
    misses = [s for s in unique if s not in found]
    if misses:
        n_workers = _worker_count(workers, len(misses))
        log.info("Generating %d RDKit conformer(s) for Uni-Mol (%d cached; %d process(es)); cache: %s",
                 len(misses), stats.cached, n_workers, root)
        invalid: list[str] = []
        unwritable: OSError | None = None
        for s, conf in zip(misses, _embed_all(misses, seed, mode, remove_hs, n_workers), strict=True):
            if conf is None:
                invalid.append(s)
                continue
            if unwritable is None:
                try:
                    _write(paths[s], s, conf)
                except OSError as exc:  # a read-only or full cache costs time, not the run
                    unwritable = exc
                    log.warning("Cannot write the conformer cache %s (%s): conformers are kept in memory only and "
                                "made again next time. Set HEADSTART_CACHE_DIR (or cache_dir) to a writable "
                                "folder.", root, exc)
            found[s] = conf
            stats.computed += 1
        if invalid:
            where = [i for i, s in enumerate(smiles) if s in set(invalid)]
            shown = ", ".join(f"{i}: {smiles[i]!r}" for i in where[:10])
            raise DataError(f"RDKit cannot read {len(invalid)} SMILES, so Uni-Mol has no conformer for them (position: "
                            f"SMILES) {shown}{' ...' if len(where) > 10 else ''}. Fix or drop those rows (data.molecules"
                            f".invalid: drop) before building Uni-Mol inputs.")
    for s in unique:
        stats.fallback_2d += found[s].status == "2d"
        stats.failed += found[s].status == "failed"
    stats.seconds = round(time.perf_counter() - started, 3)
    if stats.fallback_2d or stats.failed:
        log.info("Uni-Mol conformers: %d of %d molecule(s) have 2-D coordinates (3-D embedding failed) and %d none "
                 "(zeros), as unimol-tools does", stats.fallback_2d, stats.unique, stats.failed)
    return [found[s] for s in smiles], stats


def _worker_count(workers: int | None, misses: int) -> int:
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if misses >= _AUTO_WORKERS_FROM else 1
    return max(1, min(int(workers), misses))


def _embed_all(misses: list[str], seed: int, mode: str, remove_hs: bool, workers: int) -> list[Conformer | None]:
    args = [(s, seed, mode, remove_hs) for s in misses]
    if workers == 1:
        return [_embed_args(a) for a in args]
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        return list(pool.map(_embed_args, args, chunksize=max(1, len(args) // (workers * 8))))


# ----- dataset and batches ---------------------------------------------------------------------------
def _crop(smiles: str, atoms: np.ndarray, coordinates: np.ndarray, max_atoms: int,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_atoms`` atoms: a random subset as unimol-tools takes, seeded by (seed, SMILES)."""
    if len(atoms) <= max_atoms:
        return atoms, coordinates
    salt = int.from_bytes(hashlib.sha256(smiles.encode()).digest()[:8], "little")
    keep = np.sort(np.random.default_rng([int(seed), salt]).choice(len(atoms), max_atoms, replace=False))
    return atoms[keep], coordinates[keep]


class UniMolDataset(Dataset):
    """One item per molecule: ``(features, label)``; features are unimol-tools' numpy inputs (``src_tokens``,
    ``src_distance``, ``src_coord``, ``src_edge_type``), label an int (classes), a float32 tensor [T] (targets,
    NaN = missing) or None (unlabelled).

    ``dictionary`` is a ``dict.txt`` path or the Dictionary of the encoder (``UniMolEncoder.dictionary``): the
    token ids must be the encoder's. ``rows`` (file rows) survive :meth:`subset`; ``lengths`` are atoms per
    molecule (after hydrogen removal and cropping); ``preprocessing`` + :meth:`fingerprint` are the data part of
    feature-cache keys; ``conformer_stats`` says how many conformers were cached, computed or 2-D fallbacks.
    """

    def __init__(
        self,
        smiles: Sequence[str],
        labels: Any = None,
        rows: Sequence[int] | np.ndarray | None = None,
        *,
        dictionary: Any,
        max_atoms: int = 256,
        remove_hs: bool = True,
        seed: int = 42,
        cache_dir: str | os.PathLike[str] | None = None,
        mode: str = "fast",
        workers: int | None = None,
    ) -> None:
        if int(max_atoms) < 1:
            raise ConfigError(f"UniMolDataset max_atoms must be >= 1, got {max_atoms}.")
        if isinstance(dictionary, str | os.PathLike):
            dictionary = load_unimol_dictionary(dictionary)
        smiles = [str(s) for s in smiles]
        conformers, stats = generate_conformers(smiles, seed=seed, remove_hs=remove_hs, mode=mode,
                                                cache_dir=cache_dir, workers=workers)
        cropped = [_crop(s, c.atoms, c.coordinates, int(max_atoms), seed) for s, c in zip(smiles, conformers,
                                                                                          strict=True)]
        preprocessing = {
            "molecules": "unimol", "format": CONFORMER_FORMAT, "max_atoms": int(max_atoms), "crop": "seeded",
            "conformer": {"generator": "unimol_tools.inner_smi2coords", "mode": mode, "seed": int(seed),
                          "remove_hs": bool(remove_hs), "unimol_tools": _versions()[0], "rdkit": _versions()[1]},
            "dictionary": dictionary_digest(dictionary),
        }
        self._set(smiles, [a for a, _ in cropped], [c for _, c in cropped], labels, rows, dictionary, preprocessing,
                  stats)

    def _set(self, smiles: list[str], atoms: list[np.ndarray], coords: list[np.ndarray], labels: Any, rows: Any,
             dictionary: Any, preprocessing: dict[str, Any], stats: ConformerStats) -> None:
        n = len(smiles)
        self.smiles = smiles
        self._atoms, self._coords = atoms, coords
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(self.rows) != n:
            raise DataError(f"UniMolDataset got {n} SMILES but {len(self.rows)} rows; expected one row each.")
        self.labels = None if labels is None else check_labels(labels, n, "UniMolDataset")
        self.dictionary = dictionary
        self.pad_idx = int(dictionary.pad())
        self.max_atoms = int(preprocessing["max_atoms"])
        self.remove_hs = bool(preprocessing["conformer"]["remove_hs"])
        self.lengths = np.asarray([len(a) for a in atoms], dtype=np.int64)
        self.preprocessing = preprocessing
        self.conformer_stats = stats

    def __len__(self) -> int:
        return len(self.smiles)

    def features(self, index: int) -> dict[str, np.ndarray]:
        """unimol-tools' ``coords2unimol`` of molecule ``index``: tokens [L], distance [L, L], coord [L, 3],
        edge types [L, L], with L = atoms + 2 ([CLS] and [SEP])."""
        import_unimol_tools()  # a no-op once done; DataLoader workers started by spawn import it here
        from unimol_tools.data.conformer import coords2unimol

        return coords2unimol(self._atoms[index], self._coords[index], self.dictionary, self.max_atoms,
                             remove_hs=self.remove_hs)

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], int | torch.Tensor | None]:
        features = self.features(index)
        if self.labels is None:
            return features, None
        if self.labels.ndim == 1:
            return features, int(self.labels[index])
        return features, torch.from_numpy(self.labels[index])

    def subset(self, idx: np.ndarray | Sequence[int]) -> UniMolDataset:
        """The molecules at positions ``idx`` (in that order), e.g. a split or a stack fold."""
        idx = np.asarray(idx, dtype=np.int64)
        out = UniMolDataset.__new__(UniMolDataset)
        out._set([self.smiles[i] for i in idx], [self._atoms[i] for i in idx], [self._coords[i] for i in idx],
                 None if self.labels is None else self.labels[idx], self.rows[idx], self.dictionary,
                 self.preprocessing, self.conformer_stats)
        return out

    def collator(self) -> UniMolCollator:
        return UniMolCollator(self.pad_idx)

    def fingerprint(self) -> str:
        """Hash of exactly what the encoder sees (the SMILES in order and how they become inputs), not the
        labels: the data part of a feature-cache key."""
        from headstart.cache.key import array_digest

        smiles = json.dumps(self.smiles, ensure_ascii=False).encode()
        described = json.dumps(self.preprocessing, sort_keys=True, default=str).encode()
        return array_digest(np.frombuffer(described, dtype=np.uint8), np.frombuffer(smiles, dtype=np.uint8))


def collate_unimol(items: Sequence[tuple[dict[str, np.ndarray], Any]],
                   pad_idx: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Pad a batch as unimol-tools does: ``src_tokens`` long [B, L] and ``src_edge_type`` long [B, L, L] with the
    dictionary's pad index (0: :func:`load_unimol_dictionary` requires ``[PAD]`` first), ``src_distance`` [B, L, L] and ``src_coord`` [B, L, 3] float with 0. Labels:
    long [B], float32 [B, T], or None when the items are unlabelled."""
    if not items:
        raise DataError("collate_unimol got an empty batch; a DataLoader never sends one, check the sampler.")
    import_unimol_tools()
    from unimol_tools.utils import pad_1d_tokens, pad_2d, pad_coords

    feats = [f for f, _ in items]

    def column(key: str, dtype: torch.dtype) -> list[torch.Tensor]:
        return [torch.as_tensor(f[key], dtype=dtype) for f in feats]

    batch = {
        "src_tokens": pad_1d_tokens(column("src_tokens", torch.long), pad_idx=pad_idx),
        "src_distance": pad_2d(column("src_distance", torch.float32), pad_idx=0.0),
        "src_coord": pad_coords(column("src_coord", torch.float32), pad_idx=0.0),
        "src_edge_type": pad_2d(column("src_edge_type", torch.long), pad_idx=pad_idx),
    }
    labels = [label for _, label in items]
    if all(v is None for v in labels):
        return batch, None
    if any(v is None for v in labels):
        raise DataError("collate_unimol got a batch mixing labelled and unlabelled molecules; a dataset is either "
                        "labelled or not.")
    if isinstance(labels[0], torch.Tensor | np.ndarray):
        return batch, torch.stack([torch.as_tensor(v) for v in labels]).to(torch.float32)
    return batch, torch.tensor(labels, dtype=torch.long)


@dataclass(frozen=True)
class UniMolCollator:
    """``collate_unimol`` with the dataset's pad index, as a picklable DataLoader ``collate_fn``."""

    pad_idx: int = 0

    def __call__(self, items: Sequence[tuple[dict[str, np.ndarray], Any]]
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        return collate_unimol(items, self.pad_idx)
