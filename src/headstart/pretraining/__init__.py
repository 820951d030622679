"""Pretraining objectives (supervised, coles, attribute_masking, mlm, ...): ``headstart pretrain`` runs one and exports the encoder.

Kept light on import (no torch): config validation reads the registry's names.
"""

from headstart.pretraining.objectives import (
    Objective,
    PretrainResult,
    SupervisedObjective,
    get_objective,
    objective_names,
    register_objective,
    run_pretrain,
)

__all__ = [
    "Objective",
    "PretrainResult",
    "SupervisedObjective",
    "get_objective",
    "objective_names",
    "register_objective",
    "run_pretrain",
]
