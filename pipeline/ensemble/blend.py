"""Ensembles of model predictions: weights on the simplex chosen on validation.

`fit_weights(task, y_valid, [scores...], step, loss=...)` searches every weight vector with entries in
multiples of `step` that are >= 0 and sum to 1 and keeps the one with the lowest validation loss (`objective`:
log loss / RMSE, or the task's primary metric). `combine` applies weights to mean-averaged scores, or to
per-column ranks scaled to [0, 1] (rank averaging, for members whose scores are not on one scale).
`crossfit_check` tells whether blending helps at all: weights fit on k-1 folds of the fit rows score the
held-out fold, and the blend's primary metric over all folds is compared with the best single member's.
`versus_best` puts an interval on the blend's difference from its best member on test (paired bootstrap, and
an exact McNemar test for accuracy).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from pipeline.data.metrics import f1_from_counts, indicators, midranks
from pipeline.data.tasks import Task


def simplex_grid(n: int, step: float) -> np.ndarray:
    """All weight vectors of length n, multiples of step, >= 0, summing to 1. (M, n)."""
    k = int(round(1 / step))

    def parts(m: int, left: int) -> list[list[int]]:  # the m-tuples summing to `left`, in itertools.product order
        return [[left]] if m == 1 else [[i, *rest] for i in range(left + 1) for rest in parts(m - 1, left - i)]
    return np.array(parts(n, k), dtype=np.float64).reshape(-1, n) / k


def grid_size(n: int, step: float) -> int:
    """len(simplex_grid(n, step)) without building it: C(k + n - 1, n - 1)."""
    return math.comb(int(round(1 / step)) + n - 1, n - 1)


def ranks(scores: np.ndarray) -> np.ndarray:
    return np.column_stack([(midranks(scores[:, j]) - 1) / max(len(scores) - 1, 1)
                            for j in range(scores.shape[1])])


def combine(members: list[np.ndarray], weights: np.ndarray, method: str = "mean") -> np.ndarray:
    if method == "rank":
        members = [ranks(m) for m in members]
    return sum(w * m for w, m in zip(weights, members))


Loss = Callable[[np.ndarray, np.ndarray], np.ndarray]


def objective_loss(task: Task, objective: str, primary: str, method: str = "mean") -> Loss:
    """(y, blends (G, N, K)) -> (G, 2): the value to minimize and a tie-breaker, for G candidate blends at
    once. log_loss: log loss (RMSE for regression). primary: the primary metric signed so that lower is better,
    ties (frequent for accuracy) broken by log loss. Rank-averaged scores have no probability scale:
    correlation / ROC-AUC instead."""
    if method == "rank":
        auc = "roc_auc" if task.kind == "binary" else "roc_auc_ovr" if task.kind == "multiclass" else "roc_auc_macro"
        one = (lambda y, s: -float(np.corrcoef(s[:, 0], y)[0, 1])) if task.kind == "regression" else \
            (lambda y, s: -task.metric(auc, y, np.clip(s, 0, 1)))
        return lambda y, B: np.array([[one(y, s), 0.0] for s in B])
    if objective == "log_loss":
        return lambda y, B: np.column_stack([task.selection_losses(y, B), np.zeros(len(B))])
    sign = -1.0 if task.higher_is_better(primary) else 1.0
    return lambda y, B: np.column_stack([sign * batch_metric(task, primary, y, B), task.selection_losses(y, B)])


def batch_metric(task: Task, name: str, y: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Task.metric of each blend in B (G, N, K) -> (G,): counting metrics vectorized, the rest row by row."""
    k = task.kind
    if name in ("log_loss", "log_loss_mean"):
        return task.selection_losses(y, B)
    if k == "regression":
        err = B[:, :, 0] - y
        if name == "rmse":
            return np.sqrt(np.mean(err ** 2, axis=1))
        if name == "mae":
            return np.mean(np.abs(err), axis=1)
    elif name in ("accuracy", "subset_accuracy", "f1", "f1_macro"):
        hard = B.argmax(-1) if k == "multiclass" else (B >= 0.5).astype(np.int64)
        if k == "binary":
            hard = hard[:, :, 0]
        if name in ("accuracy", "subset_accuracy"):
            eq = hard == y
            return np.mean(eq.all(-1) if k == "multilabel" else eq, axis=1)
        if k == "multilabel":  # per label: predicted (G, N, L) vs true (N, L)
            tp, pred, true = (hard * y).sum(1), hard.sum(1), np.asarray(y).sum(0)
        else:
            classes = [1] if name == "f1" else range(len(task.classes))
            tp = np.stack([((hard == c) & (y == c)).sum(1) for c in classes], -1)
            pred = np.stack([(hard == c).sum(1) for c in classes], -1)
            true = np.array([(y == c).sum() for c in classes])
        return f1_from_counts(tp, pred, true).mean(-1)
    return np.array([task.metric(name, y, s) for s in B])


def fit_weights(task: Task, y_valid: np.ndarray, members: list[np.ndarray], step: float,
                method: str = "mean", loss: Loss | None = None) -> tuple[np.ndarray, float]:
    """-> (weights (n,), the objective's value). For n above 5 the grid coarsens to keep the search small.
    `loss` defaults to log loss / RMSE (see objective_loss). Blends are scored a block of weights at a time
    (one einsum and one vectorized loss per block): thousands of candidates cost well under a second."""
    loss = loss or objective_loss(task, "log_loss", "", method)
    n = len(members)
    while n > 1 and grid_size(n, step) > 20000:  # sizing by building each grid took hours at 10 members
        step *= 2
    grid = simplex_grid(n, step) if n > 1 else np.ones((1, 1))
    S = np.stack([ranks(m) for m in members] if method == "rank" else members).astype(np.float64)
    block = max(1, int(2e7 // max(S[0].size, 1)))
    best_w, best = None, (np.inf, np.inf)
    for i in range(0, len(grid), block):
        W = grid[i:i + block]
        V = loss(y_valid, np.einsum("gm,mnk->gnk", W, S))
        j = np.lexsort((V[:, 1], V[:, 0]))[0]  # lowest value, then lowest tie-breaker, then earliest
        if (V[j, 0], V[j, 1]) < best:
            best_w, best = W[j], (V[j, 0], V[j, 1])
    return best_w, float(best[0])


def kfold(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) index pairs of scikit-learn's KFold(k, shuffle=True, random_state=seed), equal to
    them (tested), without importing scikit-learn into the evaluate stage."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    folds, start = [], 0
    for size in sizes:
        test = np.zeros(n, dtype=bool)
        test[order[start:start + size]] = True
        folds.append((np.flatnonzero(~test), np.flatnonzero(test)))
        start += size
    return folds


def crossfit_check(task: Task, y: np.ndarray, members: list[np.ndarray], names: list[str], step: float,
                   method: str, loss: Loss, primary: str, k: int = 5, seed: int = 0) -> dict:
    """Does blending help on the fit rows? Each fold's blend uses weights fit on the other folds, so the
    blend is not scored on the rows that chose its weights (a member needs no such care: it saw none of them).
    -> {metric, blend (cross-fitted), members {name: value}, best_member, best_member_value, gain}; gain > 0
    means the blend is better on the primary metric."""
    k = max(2, min(k, len(y) // 2))
    blended = np.zeros_like(members[0])
    for tr, te in kfold(len(y), k, seed):
        w, _ = fit_weights(task, y[tr], [m[tr] for m in members], step, method, loss)
        blended[te] = combine([m[te] for m in members], w, method)
    sign = 1.0 if task.higher_is_better(primary) else -1.0
    values = {n: task.metric(primary, y, m) for n, m in zip(names, members)}
    best = max(values, key=lambda n: sign * values[n])
    blend = task.metric(primary, y, blended)
    return {"metric": primary, "rows": int(len(y)), "folds": k, "blend": blend, "members": values,
            "best_member": best, "best_member_value": values[best], "gain": sign * (blend - values[best])}


def row_counts(task: Task, name: str, y: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
    """Per-row statistics (N, m) whose sums over any set of rows give `name` on those rows (counts_metric),
    for accuracy, F1 and the regression errors; None for metrics that do not decompose (ROC-AUC, log loss, R2)."""
    if task.kind == "regression":
        err = scores[:, 0] - y
        return {"rmse": err ** 2, "mae": np.abs(err)}[name][:, None] if name in ("rmse", "mae") else None
    hard = task.hard(scores)
    if name in ("accuracy", "subset_accuracy"):
        return np.reshape(hard == y, (len(y), -1)).all(1)[:, None].astype(np.float64)
    if name not in ("f1", "f1_macro"):
        return None
    # one column per label (multilabel), or per class: the positive one for f1, all for f1_macro
    true, pred = indicators(y, hard, [1] if name == "f1" else range(len(task.classes)))
    return np.hstack([pred & true, pred, true]).astype(np.float64)


def counts_metric(name: str, sums: np.ndarray, n: int) -> np.ndarray:
    """Sums of row_counts over sets of n rows (B, m) -> `name` on each set (B,)."""
    if name in ("accuracy", "subset_accuracy", "mae"):
        return sums[:, 0] / n
    if name == "rmse":
        return np.sqrt(sums[:, 0] / n)
    tp, pred, true = np.split(sums, 3, axis=1)
    return f1_from_counts(tp, pred, true).mean(1)


def versus_best(task: Task, primary: str, y: np.ndarray, blend: np.ndarray, members: dict[str, np.ndarray],
                n_boot: int = 2000, seed: int = 0) -> dict:
    """Is the blend better than its best member on these rows? `blend`, `members[name]`: scores (N, K) of the
    same N rows with labels y. The best member is the one with the best `primary` on these rows (picked on the
    rows themselves, which favours the member: a conservative comparison for the blend).
    -> {metric, member, member_value, blend_value, delta (blend - member, the metric's own sign), ci95_low,
    ci95_high (2.5/97.5 percentiles of delta over `n_boot` paired bootstrap resamples of the rows: both scored
    on the same resampled rows), n_boot, p_mcnemar}. For accuracy / subset_accuracy also only_blend_right,
    only_member_right (the rows one gets right and the other wrong) and p_mcnemar, the exact two-sided McNemar
    test on them; p_mcnemar is None for other metrics. Counting metrics (accuracy, F1, RMSE, MAE: every task's
    default primary) are resampled through row_counts: 2,000 resamples of 2,000 rows take 0.05 s (accuracy) to
    0.3 s (5-class macro-F1); the others call Task.metric per resample (ROC-AUC: about 10 s)."""
    sign = 1.0 if task.higher_is_better(primary) else -1.0
    values = {n: task.metric(primary, y, s) for n, s in members.items()}
    best = max(values, key=lambda n: sign * values[n])
    a, b = blend, members[best]
    n, rng = len(y), np.random.default_rng(seed)
    ca, cb = row_counts(task, primary, y, a), row_counts(task, primary, y, b)
    chunk = max(1, min(100, int(2e6 // n)))  # resamples at a time: bounds the memory of the index
    deltas = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, (min(chunk, n_boot - start), n))
        if ca is None:
            deltas += [task.metric(primary, y[i], a[i]) - task.metric(primary, y[i], b[i]) for i in idx]
            continue
        # W[r, j]: how often resample r drew row j; W @ counts sums each resample's rows
        W = np.bincount((idx + n * np.arange(len(idx))[:, None]).ravel(), minlength=idx.size).reshape(idx.shape)
        deltas += list(counts_metric(primary, W @ ca, n) - counts_metric(primary, W @ cb, n))
    lo, hi = np.nanpercentile(deltas, [2.5, 97.5])  # nan: a resample with one class has no ROC-AUC
    blend_value = task.metric(primary, y, a)
    out = {"metric": primary, "member": best, "member_value": values[best], "blend_value": blend_value,
           "delta": blend_value - values[best], "ci95_low": float(lo), "ci95_high": float(hi), "n_boot": n_boot,
           "p_mcnemar": None}
    if primary in ("accuracy", "subset_accuracy"):
        right_a, right_b = ca[:, 0] > 0, cb[:, 0] > 0
        only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
        out |= {"only_blend_right": only_a, "only_member_right": only_b,
                "p_mcnemar": mcnemar_exact(only_a, only_b)}
    return out


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: of the b + c rows on which two classifiers disagree about being right,
    how unlikely a split at least as uneven as b : c is when each is equally likely to be the right one
    (binomial, p = 1/2; scipy.stats.binomtest's value, without importing SciPy)."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    i = np.arange(1, k + 1)
    log_comb = np.concatenate([[0.0], np.cumsum(np.log((n - i + 1) / i))])  # log C(n, 0..k)
    return float(min(1.0, 2 * np.exp(log_comb - n * np.log(2)).sum()))
