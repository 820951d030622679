"""How well embeddings separate the classes, independent of any head: the Fisher ratio.

Fisher ratio = tr(S_B) / tr(S_W), with the between-class scatter ``S_B = sum_c n_c (mu_c - mu)(mu_c - mu)^T``
and the within-class scatter ``S_W = sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T``: the spread of the class
centres over the spread of the points around their own centre. It rises when classes form tight,
well-separated clusters, so after a domain shift (model A -> dataset B) it shows whether fine-tuning
reorganised the space or only moved the classifier. Only traces are needed, so it costs O(N D) and no
D x D matrix is formed.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["fisher_ratio"]


def fisher_ratio(embeddings: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """tr(S_B) / tr(S_W) of ``embeddings [N, D]`` grouped by ``labels [N]``; NaN when undefined.

    Undefined: fewer than two classes present, or zero within-class scatter (every class one point).
    """
    x = torch.as_tensor(embeddings).detach().to(torch.float64).cpu()
    y = torch.as_tensor(labels).detach().cpu().long().reshape(-1)
    if x.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"fisher_ratio needs embeddings [N, D] and labels [N], got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}.")
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        return float("nan")
    sums = torch.zeros(len(classes), x.shape[1], dtype=torch.float64).index_add_(0, inverse, x)
    centres = sums / counts.unsqueeze(1).to(torch.float64)
    mu = x.mean(dim=0)
    between = float((counts.to(torch.float64) * ((centres - mu) ** 2).sum(dim=1)).sum())
    within = float(((x - centres[inverse]) ** 2).sum())
    if within <= 0.0:
        return float("nan")
    return between / within
