"""Classification and regression metrics in numpy, equal to scikit-learn's (tests/data/test_metrics.py checks
them against it on ties, absent classes and single-class inputs).

Why not `sklearn.metrics`: importing scikit-learn was most of the evaluate stage's time (benchmarks/RESULTS.md,
"Iteration"), and evaluate reruns on every change of a head (a new C, a new member). The formulas it needs:

- `f1_per_class(y, pred, n)`: F1 = 2TP / (2TP + FP + FN) per class, 0 where the denominator is 0
  (scikit-learn's `zero_division=0`); y, pred are class ids, or 0/1 matrices (one column per label).
  `f1_from_counts` is the same from counts (the ensemble's bootstrap sums them over resamples).
- `binary_auc(y, s)`: ROC-AUC as the Mann-Whitney statistic on mid-ranks (ties count half); NaN when y holds
  one class only or a score is NaN (scikit-learn raises there; the callers reported NaN).
- `roc_curve(y, s)`: (fpr, tpr) with scikit-learn's `drop_intermediate` points, for the ROC plot.
- `r2(y, pred)`: the coefficient of determination, 1.0 / 0.0 for a constant target (scikit-learn's
  `force_finite`), NaN for fewer than two rows.
- `midranks(x)`: 1-based ranks, ties sharing their mean rank (scipy.stats.rankdata's default).
"""
from __future__ import annotations

import numpy as np


def midranks(x: np.ndarray) -> np.ndarray:
    """x (N,) -> ranks 1..N as float64; equal values get the mean of the ranks they span."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[True, xs[1:] != xs[:-1]] if len(x) else np.zeros(0, bool)
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, len(x)])
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = (first + (counts + 1) / 2.0)[np.cumsum(starts) - 1]
    return ranks


def binary_auc(y: np.ndarray, s: np.ndarray) -> float:
    """y (N,) 0/1, s (N,) scores -> ROC-AUC, or NaN when y has a single class."""
    y, s = np.asarray(y).astype(bool), np.asarray(s)
    if np.isnan(s).any():  # a diverged model's scores: no ranking to judge (scikit-learn raised here)
        return float("nan")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((midranks(s)[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y (N,) 0/1, s (N,) -> (fpr, tpr) from (0, 0) to (1, 1), collinear points dropped."""
    y, s = np.asarray(y, dtype=np.float64), np.asarray(s)
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(y) - 1]  # the last row of each distinct score
    tps = np.cumsum(y)[last]
    fps = 1 + last - tps
    if len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps = fps[keep], tps[keep]
    fps, tps = np.r_[0, fps], np.r_[0, tps]
    with np.errstate(invalid="ignore", divide="ignore"):
        return fps / fps[-1], tps / tps[-1]


def f1_from_counts(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (predicted + actual), elementwise; 0 where both are 0 (scikit-learn's zero_division=0)."""
    denom = n_pred + n_true
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def indicators(y: np.ndarray, pred: np.ndarray, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """-> (true, predicted) as boolean (N, C) matrices: one column per class of `classes` (default 0..the
    largest id) for class ids, or the label columns themselves for 0/1 matrices."""
    y, pred = np.asarray(y), np.asarray(pred)
    if y.ndim == 2:
        return y.astype(bool), pred.astype(bool)
    if classes is None:
        classes = range(int(max(y.max(initial=0), pred.max(initial=0))) + 1)
    classes = np.asarray(list(classes))
    return y[:, None] == classes, pred[:, None] == classes


def f1_per_class(y: np.ndarray, pred: np.ndarray, n: int | None = None) -> np.ndarray:
    """-> F1 of each class (class ids 0..n-1) or of each label column (0/1 matrices)."""
    t, p = indicators(y, pred, None if n is None else range(n))
    return f1_from_counts((t & p).sum(0), p.sum(0), t.sum(0))


def support(y: np.ndarray, n: int) -> np.ndarray:
    """Rows of each class id 0..n-1."""
    return np.bincount(np.asarray(y), minlength=n)[:n]


def precision_recall(y: np.ndarray, pred: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class id 0..n-1: precision TP / predicted and recall TP / actual, 0 where undefined."""
    t, p = indicators(y, pred, range(n))
    tp = (t & p).sum(0)
    return np.where(p.sum(0) > 0, tp / np.maximum(p.sum(0), 1), 0.0), np.where(t.sum(0) > 0, tp / np.maximum(t.sum(0), 1), 0.0)


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if len(y) < 2:
        return float("nan")  # undefined for one sample (scikit-learn warns and gives NaN)
    ss_res, ss_tot = float(np.sum((y - pred) ** 2)), float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1.0 - ss_res / ss_tot
