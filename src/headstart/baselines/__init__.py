"""Classic baselines (TF-IDF + logistic regression, pixels + logistic regression, RFM + LightGBM, Morgan
fingerprints + LightGBM): the reference row beside the fine-tuned strategies of ``compare`` and ``fit --baseline``.

Nothing here imports scikit-learn, LightGBM or RDKit until a baseline is fitted.
"""

from __future__ import annotations

from headstart.baselines.base import (
    BaselineOutputs,
    BaselineResult,
    BaselineUnavailable,
    ClassicBaseline,
    baseline_names,
    get_baseline,
    register_baseline,
    run_classic_baseline,
)
from headstart.baselines.run import (
    CLASSIC_PREFIX,
    baseline_label,
    baseline_row,
    compare_baseline_row,
    fit_run_baseline,
    verdict,
)

__all__ = [
    "CLASSIC_PREFIX",
    "BaselineOutputs",
    "BaselineResult",
    "BaselineUnavailable",
    "ClassicBaseline",
    "baseline_label",
    "baseline_names",
    "baseline_row",
    "compare_baseline_row",
    "fit_run_baseline",
    "get_baseline",
    "register_baseline",
    "run_classic_baseline",
    "verdict",
]
