"""Images: logistic regression on the raw pixels (``pixels_logreg``), the floor any image encoder should clear.

Each image ``[C, H, W]`` is flattened to one row; integer pixels (uint8) are divided by their type's maximum so
features lie in [0, 1], float images are used as read. No normalisation beyond that: the training split's
per-channel mean / std would shift every row alike. Then :func:`headstart.baselines.linear.fit_linear` with a
grid of stronger regularisation than text (``PIXEL_C_GRID``: pixels are many, correlated features, and lbfgs
converges slowly at large C on them). Image pairs are skipped: a pixel-difference model is no fair reference
for a Siamese encoder, so the row says so instead of showing a number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.baselines.base import BaselineOutputs, BaselineUnavailable, ClassicBaseline, register_baseline
from headstart.baselines.linear import fit_linear

if TYPE_CHECKING:
    from headstart.config import RunConfig

__all__ = ["PIXEL_C_GRID", "PixelsLogreg", "pixel_features"]

PIXEL_C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)


def pixel_features(x: np.ndarray) -> np.ndarray:
    """``[N, C, H, W]`` images as ``[N, C*H*W]`` float32 rows; integer pixels scaled to [0, 1]."""
    flat = np.asarray(x).reshape(len(x), -1)
    if np.issubdtype(flat.dtype, np.integer):
        return flat.astype(np.float32) / np.float32(np.iinfo(flat.dtype).max)
    return flat.astype(np.float32)


class PixelsLogreg(ClassicBaseline):
    name = "pixels_logreg"
    label = "logistic regression on pixels"
    requires = ("sklearn",)

    def fit_predict(self, cfg: RunConfig, splits: Any) -> BaselineOutputs:
        if splits.train.is_pairs:
            raise BaselineUnavailable("image pairs have no classic baseline (a pixel model of two images is no "
                                      "fair reference for a Siamese encoder); the strategies are compared with "
                                      "each other only.")
        parts = {"train": splits.train, "val": splits.val, **({"test": splits.test} if splits.test is not None else {})}
        x = {name: pixel_features(arrays.x) for name, arrays in parts.items()}
        y = {name: np.asarray(arrays.y) for name, arrays in parts.items()}
        fitted = fit_linear(cfg, splits, x, y, grid=None if splits.label_map.kind == "regression" else PIXEL_C_GRID)
        fitted.params = {"features": f"pixels ({x['train'].shape[1]} per image, scaled to [0, 1])", **fitted.params}
        return fitted


register_baseline(PixelsLogreg())
