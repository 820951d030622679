"""CosFace / ArcFace logits against the published formulas; the margin is off outside training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headstart.errors import ConfigError
from headstart.heads.margin import MarginHead


def _cosines(head: MarginHead, x: torch.Tensor) -> np.ndarray:
    w = head.classifier.weight.detach().numpy()
    xn = x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=1, keepdims=True)
    return xn @ wn.T


def test_cosface_matches_wang_2018() -> None:
    torch.manual_seed(0)
    head = MarginHead(8, 5, kind="cosface", scale=30.0, margin=0.35).train()
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    cos = _cosines(head, x)
    expected = 30.0 * (cos - 0.35 * np.eye(5)[y.numpy()])
    np.testing.assert_allclose(head(x, y).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_arcface_matches_deng_2019_including_the_fallback() -> None:
    torch.manual_seed(1)
    m, s = 0.5, 64.0
    head = MarginHead(4, 3, kind="arcface", scale=s, margin=m).train()
    w = head.classifier.weight.detach()
    # Row 0: near class 0 (theta + m < pi); row 1: opposite to class 1, so theta + m > pi (fallback branch).
    x = torch.stack([w[0] + 0.1 * torch.randn(4), -w[1]])
    y = torch.tensor([0, 1])
    cos = _cosines(head, x)
    expected = s * cos.copy()
    for i, c in enumerate(y.tolist()):
        theta = math.acos(float(np.clip(cos[i, c], -1, 1)))
        if theta + m < math.pi:
            expected[i, c] = s * math.cos(theta + m)
        else:
            expected[i, c] = s * (cos[i, c] - math.sin(math.pi - m) * m)
    assert math.acos(float(np.clip(cos[1, 1], -1, 1))) + m > math.pi  # the case is really exercised
    np.testing.assert_allclose(head(x, y).detach().numpy(), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kind", ["cosface", "arcface"])
def test_margin_only_in_training(kind: str) -> None:
    torch.manual_seed(2)
    head = MarginHead(8, 4, kind=kind, scale=16.0)
    x, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 0])
    plain = 16.0 * _cosines(head, x)
    head.eval()
    np.testing.assert_allclose(head(x, y).detach().numpy(), plain, rtol=1e-5, atol=1e-5)
    head.train()
    np.testing.assert_allclose(head(x).detach().numpy(), plain, rtol=1e-5, atol=1e-5)  # no labels, no margin
    trained = head(x, y).detach().numpy()
    target = trained[np.arange(5), y.numpy()]
    assert (target < plain[np.arange(5), y.numpy()]).all()  # the margin lowers only the target logit
    off = np.ones_like(plain, dtype=bool)
    off[np.arange(5), y.numpy()] = False
    np.testing.assert_allclose(trained[off], plain[off], rtol=1e-5, atol=1e-5)


def test_margin_head_gradients_reach_weights_and_features() -> None:
    head = MarginHead(8, 3, kind="arcface").train()
    x = torch.randn(4, 8, requires_grad=True)
    torch.nn.functional.cross_entropy(head(x, torch.tensor([0, 1, 2, 0])), torch.tensor([0, 1, 2, 0])).backward()
    assert head.classifier.weight.grad is not None and head.classifier.weight.grad.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"kind": "sphereface"}, "is not a margin head"),
    ({"kind": "cosface", "margin": 1.5}, "head.margin for cosface must be in [0, 1)"),
    ({"kind": "arcface", "scale": 0}, "head.scale must be > 0"),
])
def test_bad_settings_are_explained(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        MarginHead(8, 3, **kwargs)
    assert fragment in str(err.value)
