"""Generate the small molecule dataset that ships with headstart (examples/data/molecules.csv).

Molecules are built from a fixed list of ring cores and substituents (one or two substituents per core, on
the positions RDKit's canonical SMILES keep apart), so the file needs no download and carries no licence of
its own. Targets are computed with RDKit: ``logp`` (Crippen's octanol-water partition coefficient, a
regression target) and ``lipophilic`` (logp > 2.5, a class label). A model has to read the structure to get
them right; a fixed seed makes every rerun reproduce the committed file byte for byte.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

CORES = ["c1ccccc1{0}", "c1ccc({1})cc1{0}", "c1ccncc1{0}", "c1cc({1})ncc1{0}", "C1CCCCC1{0}", "C1CCC({1})CC1{0}",
         "c1ccc2ccccc2c1{0}", "c1ccoc1{0}", "c1ccsc1{0}", "C1CCNCC1{0}", "C1CCOCC1{0}", "c1cnc({1})nc1{0}",
         "c1ccc2[nH]ccc2c1{0}", "O=C1CCCN1{0}", "c1ccc(-c2ccccc2)cc1{0}", "C1CC1{0}"]
SUBSTITUENTS = ["", "C", "CC", "CCC", "C(C)C", "F", "Cl", "Br", "O", "OC", "N", "N(C)C", "C(=O)O", "C(=O)N",
                "C#N", "[N+](=O)[O-]", "C(F)(F)F", "S(=O)(=O)N", "OCC", "CCO", "C(=O)C", "NC(=O)C", "CCCCC",
                "c1ccccc1", "OCCO", "CN"]
OUT = Path(__file__).resolve().parent / "data" / "molecules.csv"


def main() -> None:
    from rdkit import Chem, rdBase
    from rdkit.Chem import Crippen

    rng = random.Random(7)
    seen: dict[str, float] = {}
    with rdBase.BlockLogs():
        for core in CORES:
            for a in SUBSTITUENTS:
                for b in SUBSTITUENTS if "{1}" in core else [""]:
                    mol = Chem.MolFromSmiles(core.format(f"({a})" if a else "", b or "[H]"))
                    if mol is None:
                        continue
                    smiles = Chem.MolToSmiles(mol)
                    seen.setdefault(smiles, Crippen.MolLogP(mol))
    rows = sorted(seen.items())
    rng.shuffle(rows)
    rows = rows[:600]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["smiles", "logp", "lipophilic"])
        for smiles, logp in rows:
            writer.writerow([smiles, f"{logp:.3f}", int(logp > 2.5)])
    print(f"wrote {len(rows)} molecules to {OUT}")


if __name__ == "__main__":
    main()
