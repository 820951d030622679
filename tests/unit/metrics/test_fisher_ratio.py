"""Fisher ratio of embeddings against a NumPy reference with explicit scatter matrices."""

from __future__ import annotations

import math

import numpy as np
import torch

from headstart.metrics import fisher_ratio


def _reference(x: np.ndarray, y: np.ndarray) -> float:
    mu = x.mean(axis=0)
    s_b = np.zeros((x.shape[1], x.shape[1]))
    s_w = np.zeros_like(s_b)
    for c in np.unique(y):
        xc = x[y == c]
        d = (xc.mean(axis=0) - mu)[:, None]
        s_b += len(xc) * d @ d.T
        centred = xc - xc.mean(axis=0)
        s_w += centred.T @ centred
    return float(np.trace(s_b) / np.trace(s_w))


def test_matches_numpy_reference_on_unbalanced_classes() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=300)
    x = rng.normal(size=(300, 7)) + 2.0 * y[:, None]
    assert math.isclose(fisher_ratio(x, y), _reference(x, y), rel_tol=1e-10)
    assert math.isclose(fisher_ratio(torch.tensor(x, dtype=torch.float32), torch.tensor(y)), _reference(x, y),
                        rel_tol=1e-5)


def test_separation_raises_the_ratio_and_scale_does_not_change_it() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 50)
    noise = rng.normal(size=(150, 5))
    close, far = noise + 0.5 * y[:, None], noise + 5.0 * y[:, None]
    assert fisher_ratio(far, y) > 10 * fisher_ratio(close, y)
    assert math.isclose(fisher_ratio(3.0 * far, y), fisher_ratio(far, y), rel_tol=1e-9)


def test_undefined_cases_are_nan() -> None:
    assert math.isnan(fisher_ratio(np.ones((4, 2)), np.zeros(4)))  # one class
    assert math.isnan(fisher_ratio(np.eye(3), np.arange(3)))  # one point per class: no within scatter
