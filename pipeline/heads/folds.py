"""k-fold heads: out-of-fold (OOF) predictions for every development row and a test prediction averaged
over the k fold models, the way Kaggle solutions train SVR heads.

`fit_folded(cfg, task, X, y, k, seed)` splits the rows it gets (train + valid) into k folds (stratified
for classes), fits one head per fold on the other k-1 folds and predicts the held-out fold. SVC margins are
Platt-calibrated once on all OOF margins (cross-fitted, like calibration 'cv') and the calibrator is shared
by the k models. With a C grid, C is chosen by OOF loss (inner CV), not on a single split.
Returns (FoldedHead, OOF scores (N, K), report).
"""
from __future__ import annotations

import logging

import numpy as np

from pipeline import PipelineError
from pipeline.heads.estimators import Head, fit_all, n_jobs, platt, resolve_backend
from pipeline.params import HeadParams
from pipeline.data.tasks import Task

log = logging.getLogger(__name__)


class FoldedHead:
    """k fitted heads; scores() is their mean, so it drops in wherever a Head is used (predict, ensemble)."""

    def __init__(self, heads: list[Head]):
        self.heads = heads
        self.C = heads[0].C

    def scores(self, X: np.ndarray) -> np.ndarray:
        return np.mean([h.scores(X) for h in self.heads], axis=0)


def fold_ids(task: Task, y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) per row; stratified by class for binary/multiclass."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(y)
    if k > n:
        raise PipelineError(f"heads folds={k}: more folds than the {n} train + valid rows")
    stratify = task.kind in ("binary", "multiclass")
    if stratify and np.bincount(np.asarray(y, dtype=int)).min() < k:
        raise PipelineError(f"heads folds={k}: a class has fewer than {k} train + valid rows; lower folds")
    splitter = (StratifiedKFold if stratify else KFold)(k, shuffle=True, random_state=seed)
    out = np.empty(n, dtype=np.int64)
    for j, (_, te) in enumerate(splitter.split(np.zeros((n, 1)), y if stratify else None)):
        out[te] = j
    return out


def _out_of_fold(folds: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    """parts[j]: the rows of fold j, in order -> one (N, ...) array in row order."""
    out = np.zeros((len(folds), *parts[0].shape[1:]))
    for j, part in enumerate(parts):
        out[folds == j] = part
    return out


def _calibrated(heads: list[Head], X, y, folds) -> tuple[FoldedHead, np.ndarray]:
    """The k fold heads of one C -> (FoldedHead, OOF scores)."""
    if heads[0].needs_calibration:
        # Stack the held-out margins of every fold and fit one calibrator per estimator on them.
        margins = [h.margins(X[folds == j]) for j, h in enumerate(heads)]  # [fold][estimator]
        cals = [platt(_out_of_fold(folds, [m[e] for m in margins]), ye)
                for e, ye in enumerate(heads[0].label_columns(y))]
        for h in heads:
            h.calibrators = cals
    return FoldedHead(heads), _out_of_fold(folds, [h.scores(X[folds == j]) for j, h in enumerate(heads)])


def fit_folded(cfg: HeadParams, task: Task, X: np.ndarray, y: np.ndarray, k: int,
               seed: int) -> tuple[FoldedHead, np.ndarray, dict]:
    """X, y: the development rows (train + valid). -> (head, OOF scores, report with the OOF loss per C).
    Every (C, fold) fit is independent: they run together on `n_jobs` threads."""
    backend = resolve_backend(cfg.backend)
    folds = fold_ids(task, y, k, seed)
    grid, jobs = cfg.C_grid or [cfg.C], n_jobs(cfg, backend, len(X) - len(X) // k)  # a fold's train rows
    pairs = [(C, j) for C in grid for j in range(k)]
    fitted = fit_all(lambda p: Head(cfg, task, backend, p[0]).fit(X[folds != p[1]], y[folds != p[1]],
                                                                   calibrate=False), pairs, jobs)
    report, best = {"backend": backend, "folds": k, "n_jobs": jobs, "grid": {}}, None
    for i, C in enumerate(grid):
        head, oof = _calibrated(fitted[i * k:(i + 1) * k], X, y, folds)
        loss = task.selection_loss(y, oof)
        report["grid"][str(C)] = loss
        log.info("head %s C=%g backend=%s %d-fold OOF loss %.4f", cfg.kind, C, backend, k, loss)
        if best is None or loss < best[2]:
            best = (head, oof, loss)
    report.update(C=best[0].C, oof_loss=best[2])
    return best[0], best[1], report
