"""Ensembles of model predictions: weights on the simplex chosen on validation.

`fit_weights(task, y_valid, [scores...], step, loss=...)` searches every weight vector with entries in
multiples of `step` that are >= 0 and sum to 1 and keeps the one with the lowest validation loss (`objective`:
log loss / RMSE, or the task's primary metric). `combine` applies weights to mean-averaged scores, or to
per-column ranks scaled to [0, 1] (rank averaging, for members whose scores are not on one scale).
`crossfit_check` tells whether blending helps at all: weights fit on k-1 folds of the fit rows score the
held-out fold, and the blend's primary metric over all folds is compared with the best single member's.
"""
from __future__ import annotations

import itertools
from typing import Callable

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


Loss = Callable[[np.ndarray, np.ndarray], tuple[float, float]]


def objective_loss(task: Task, objective: str, primary: str, method: str = "mean") -> Loss:
    """(y, scores) -> (value to minimize, tie-breaker): log loss (RMSE for regression), or the primary metric
    signed so that lower is better, ties (frequent for accuracy) broken by log loss. Rank-averaged scores have
    no probability scale: correlation / ROC-AUC instead."""
    if method == "rank" and task.kind == "regression":
        return lambda y, s: (-float(np.corrcoef(s[:, 0], y)[0, 1]), 0.0)
    if method == "rank":
        auc = "roc_auc" if task.kind == "binary" else "roc_auc_ovr" if task.kind == "multiclass" else "roc_auc_macro"
        return lambda y, s: (-task.metric(auc, y, np.clip(s, 0, 1)), 0.0)
    if objective == "log_loss":
        return lambda y, s: (task.selection_loss(y, s), 0.0)
    sign = -1.0 if task.higher_is_better(primary) else 1.0
    return lambda y, s: (sign * task.metric(primary, y, s), task.selection_loss(y, s))


def fit_weights(task: Task, y_valid: np.ndarray, members: list[np.ndarray], step: float,
                method: str = "mean", loss: Loss | None = None) -> tuple[np.ndarray, float]:
    """-> (weights (n,), the objective's value). For n above 5 the grid coarsens to keep the search small.
    `loss` defaults to log loss / RMSE (see objective_loss)."""
    loss = loss or objective_loss(task, "log_loss", "", method)
    n = len(members)
    while n > 1 and len(simplex_grid(n, step)) > 20000:
        step *= 2
    best_w, best = None, (np.inf, np.inf)
    for w in simplex_grid(n, step) if n > 1 else np.ones((1, 1)):
        value = loss(y_valid, combine(members, w, method))
        if value < best:
            best_w, best = w, value
    return best_w, float(best[0])


def crossfit_check(task: Task, y: np.ndarray, members: list[np.ndarray], names: list[str], step: float,
                   method: str, loss: Loss, primary: str, k: int = 5, seed: int = 0) -> dict:
    """Does blending help on the fit rows? Each fold's blend uses weights fit on the other folds, so the
    blend is not scored on the rows that chose its weights (a member needs no such care: it saw none of them).
    -> {metric, blend (cross-fitted), members {name: value}, best_member, best_member_value, gain}; gain > 0
    means the blend is better on the primary metric."""
    from sklearn.model_selection import KFold

    k = max(2, min(k, len(y) // 2))
    blended = np.zeros_like(members[0])
    for tr, te in KFold(k, shuffle=True, random_state=seed).split(members[0]):
        w, _ = fit_weights(task, y[tr], [m[tr] for m in members], step, method, loss)
        blended[te] = combine([m[te] for m in members], w, method)
    sign = 1.0 if task.higher_is_better(primary) else -1.0
    values = {n: task.metric(primary, y, m) for n, m in zip(names, members)}
    best = max(values, key=lambda n: sign * values[n])
    blend = task.metric(primary, y, blended)
    return {"metric": primary, "rows": int(len(y)), "folds": k, "blend": blend, "members": values,
            "best_member": best, "best_member_value": values[best], "gain": sign * (blend - values[best])}
