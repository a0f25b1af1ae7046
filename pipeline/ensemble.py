"""Ensembles of model predictions: weights on the simplex chosen on validation.

`fit_weights(task, y_valid, [scores...], step)` searches every weight vector with entries in multiples of
`step` that are >= 0 and sum to 1 and keeps the one with the lowest validation loss (log loss / RMSE).
`combine` applies weights to mean-averaged scores, or to per-column ranks scaled to [0, 1] (rank averaging,
for members whose scores are not on one scale).
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import rankdata

from pipeline.tasks import Task


def simplex_grid(n: int, step: float) -> np.ndarray:
    """All weight vectors of length n, multiples of step, >= 0, summing to 1. (M, n)."""
    k = int(round(1 / step))
    pts = [c for c in itertools.product(range(k + 1), repeat=n - 1) if sum(c) <= k]
    return np.array([[*c, k - sum(c)] for c in pts], dtype=np.float64) / k


def ranks(scores: np.ndarray) -> np.ndarray:
    return np.column_stack([(rankdata(scores[:, j]) - 1) / max(len(scores) - 1, 1)
                            for j in range(scores.shape[1])])


def combine(members: list[np.ndarray], weights: np.ndarray, method: str = "mean") -> np.ndarray:
    if method == "rank":
        members = [ranks(m) for m in members]
    return sum(w * m for w, m in zip(weights, members))


def fit_weights(task: Task, y_valid: np.ndarray, members: list[np.ndarray], step: float,
                method: str = "mean") -> tuple[np.ndarray, float]:
    """-> (weights (n,), validation loss). For n above 5 the grid coarsens to keep the search small."""
    n = len(members)
    while n > 1 and len(simplex_grid(n, step)) > 20000:
        step *= 2
    best_w, best = None, np.inf
    for w in simplex_grid(n, step) if n > 1 else np.ones((1, 1)):
        s = combine(members, w, method)
        if method == "rank" and task.kind == "regression":
            loss = -np.corrcoef(s[:, 0], y_valid)[0, 1]  # ranks have no scale: pick by correlation
        elif method == "rank":
            loss = -task.metrics(y_valid, np.clip(s, 0, 1)).get("roc_auc", 0.0)
        else:
            loss = task.selection_loss(y_valid, s)
        if loss < best - 1e-12:
            best_w, best = w, loss
    return best_w, float(best)
