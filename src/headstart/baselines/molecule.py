"""Molecules: Morgan fingerprints + LightGBM (``morgan_lightgbm``), the standard cheminformatics reference.

Features: RDKit Morgan bit vectors (ECFP4-like: radius 2, 2048 bits, ``rdFingerprintGenerator``) of each split's
SMILES, parsed again with RDKit (the splits hold them as the reader kept them). Model:
:func:`headstart.baselines.boosting.lightgbm_outputs` with the molecule benchmark's settings (learning rate
0.05, 31 leaves, min 5 rows per leaf), early-stopped on val, seeded by ``trainer.seed``; several targets (task
columns, NaN = missing) train one booster each. :func:`morgan_features` is also what
``benchmarks/molecule_fingerprints.py`` uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.baselines.base import BaselineOutputs, BaselineUnavailable, ClassicBaseline, register_baseline

if TYPE_CHECKING:
    from headstart.config import RunConfig

__all__ = ["N_BITS", "RADIUS", "MorganLightgbm", "morgan_features", "smiles_features"]

RADIUS, N_BITS = 2, 2048


def morgan_features(mols: Sequence[Any], radius: int = RADIUS, n_bits: int = N_BITS) -> np.ndarray:
    """``[N, n_bits]`` float32 Morgan bit vectors of RDKit molecules."""
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    if not len(mols):
        return np.zeros((0, n_bits), dtype=np.float32)
    return np.stack([generator.GetFingerprintAsNumPy(mol) for mol in mols]).astype(np.float32)


def smiles_features(smiles: Sequence[str], where: str) -> np.ndarray:
    """Morgan bit vectors of SMILES strings; one RDKit cannot parse is a BaselineUnavailable naming it."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mols = []
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            raise BaselineUnavailable(f"RDKit cannot parse the SMILES {s!r} (row {i} of the {where} split) again "
                                      f"for fingerprints; the fine-tuned runs read it, the baseline does not.")
        mols.append(mol)
    return morgan_features(mols)


class MorganLightgbm(ClassicBaseline):
    name = "morgan_lightgbm"
    label = "Morgan fingerprints + LightGBM"
    requires = ("rdkit", "lightgbm")

    def fit_predict(self, cfg: RunConfig, splits: Any) -> BaselineOutputs:
        from headstart.baselines.boosting import lightgbm_outputs

        parts = {"train": splits.train, "val": splits.val, **({"test": splits.test} if splits.test is not None else {})}
        x = {name: smiles_features(rows.smiles, name) for name, rows in parts.items()}
        y = {name: np.asarray(rows.labels) for name, rows in parts.items()}
        label_map = splits.label_map
        outputs, params = lightgbm_outputs(label_map.kind, label_map.n_classes, x, y, cfg.trainer.seed)
        return BaselineOutputs(outputs, {"features": f"Morgan bits, radius {RADIUS}, {N_BITS} bits", **params})


register_baseline(MorganLightgbm())
