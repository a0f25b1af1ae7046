"""Heads on cached embeddings: `make_head(cfg, task)` -> Head with fit(X, y) and scores(X).

Kinds: svm (SVC / SVR), logistic, ridge, knn, mlp (the fine-tuning MLP head on cached embeddings, torch). Backends: cuML (GPU; imported lazily, chosen by `auto` when it
imports and a GPU is present, or forced by `backend: cuml`), scikit-learn-intelex, scikit-learn. Every backend
sees the same standardized/L2-normalized inputs, and regression targets scaled to [0, 1].
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import Callable, Sequence

import numpy as np

from pipeline import PipelineError
from pipeline.data.tasks import Task
from pipeline.params import HeadParams

log = logging.getLogger(__name__)
# Rows scored at a time: the normalized copy, an approximate SVM's Nystroem features (rows x 1000 float64)
# and the estimators' temporaries stay bounded whatever the number of rows scored.
SCORE_ROWS = 65536


def cuml_available() -> bool:
    """cuML imports and sees a GPU. cuML first: where it is not installed (every CPU machine) this fails at once,
    without importing torch or CUDA libraries."""
    try:
        importlib.import_module("cuml")
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any import or driver failure means "not here"
        return False


def sklearnex_available() -> bool:
    try:
        importlib.import_module("sklearnex")
        return True
    except ImportError:
        return False


def resolve_backend(requested: str) -> str:
    """auto: cuML on a GPU, else scikit-learn-intelex when installed (same results, 14-19x faster SVC fits
    here: benchmarks/RESULTS.md), else scikit-learn."""
    if requested == "auto":
        return "cuml" if cuml_available() else "sklearnex" if sklearnex_available() else "sklearn"
    if requested == "cuml" and not cuml_available():
        raise PipelineError("heads backend 'cuml' needs an NVIDIA GPU and `pip install svmft[gpu]` (cuML); "
                            "use backend: auto or sklearn here")
    if requested == "sklearnex" and not sklearnex_available():
        raise PipelineError("heads backend 'sklearnex' needs `pip install scikit-learn-intelex`")
    return requested


def _estimators(backend: str):
    """name -> class for the backend (same constructor arguments across backends)."""
    if backend == "cuml":
        svm, lin, nb = (importlib.import_module(m) for m in ("cuml.svm", "cuml.linear_model", "cuml.neighbors"))
    elif backend == "sklearnex":
        svm, lin, nb = (importlib.import_module(m) for m in ("sklearnex.svm", "sklearnex.linear_model",
                                                              "sklearnex.neighbors"))
    else:
        svm, lin, nb = (importlib.import_module(m) for m in ("sklearn.svm", "sklearn.linear_model",
                                                              "sklearn.neighbors"))
    return {"SVC": svm.SVC, "SVR": svm.SVR, "LogisticRegression": lin.LogisticRegression, "Ridge": lin.Ridge,
            "KNeighborsClassifier": nb.KNeighborsClassifier, "KNeighborsRegressor": nb.KNeighborsRegressor}


class Head:
    """One head: normalization + one estimator per output column (multilabel) or one estimator."""

    def __init__(self, cfg: HeadParams, task: Task, backend: str, C: float | None = None):
        self.cfg, self.task, self.backend = cfg, task, backend
        self.C = C if C is not None else cfg.C
        self.mean = self.std = None
        self.models: list = []
        self.calibrators: list = []
        self._cal_margins: tuple | None = None  # (X_cal, its margins): heldout_scores reuses them
        self.approx = False  # set by fit: Nystroem + linear SVM instead of a kernel SVM (max_kernel_rows)

    # ---- normalization ----
    def _norm(self, X: np.ndarray, fit: bool = False) -> np.ndarray:
        """-> X normalized, as a new float32 array (X itself for `none`). Besides X and it, memory holds a block
        of rows or columns, never a third (N, D) temporary (1M train rows x 384: 1.5 GB); the values are bit for
        bit those of the whole-matrix expressions (a row's norm and a column's moments do not depend on the rest)."""
        X = np.asarray(X, dtype=np.float32)
        if self.cfg.normalize == "l2":
            return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)  # norm: no X * X temporary
        if self.cfg.normalize == "standard":
            if fit:
                cols = [slice(j, j + 64) for j in range(0, X.shape[1], 64)]
                self.mean = np.concatenate([X[:, c].mean(0) for c in cols])
                self.std = np.concatenate([X[:, c].std(0) for c in cols]) + 1e-6
            out = X - self.mean
            out /= self.std
            return out
        return X

    def _make(self, regression: bool, Xn: np.ndarray | None = None):
        """A fresh estimator; `Xn`: the normalized rows it will be fit on (the approximate SVM's gamma)."""
        E, c = _estimators(self.backend), self.cfg
        kind = c.kind
        if kind == "svm" and self.approx and Xn is not None:
            from pipeline.heads.approx import kernel_svm
            return kernel_svm(c, self.C, regression, Xn)
        if kind == "svm":
            if regression:
                return E["SVR"](C=self.C, kernel=c.kernel, gamma=c.gamma, epsilon=c.epsilon)
            return E["SVC"](C=self.C, kernel=c.kernel, gamma=c.gamma)
        if kind == "logistic":
            return E["Ridge"](alpha=1.0 / self.C) if regression else E["LogisticRegression"](C=self.C, max_iter=2000)
        if kind == "ridge":
            return E["Ridge"](alpha=1.0 / self.C)
        if kind == "knn":
            return E["KNeighborsRegressor" if regression else "KNeighborsClassifier"](n_neighbors=c.n_neighbors)
        raise PipelineError(f"unknown head kind {kind!r}")

    def approximates(self, n_rows: int) -> bool:
        return kernel_approximated(self.cfg, self.backend, n_rows)

    def fit(self, X: np.ndarray, y: np.ndarray, X_cal: np.ndarray | None = None,
            y_cal: np.ndarray | None = None, calibrate: bool = True) -> "Head":
        """X (N, D) float; y as Task.encode gives it (class ids, 0/1 matrix, or original-scale values).
        X_cal/y_cal: the split that Platt-calibrates SVC margins when calibration is 'valid'.
        calibrate=False leaves `calibrators` for the caller to set (k-fold heads share cross-fitted ones)."""
        Xn = self._norm(X, fit=True)
        t = self.task
        self.approx = self.approximates(len(Xn))  # decided once: the calibration folds use the same kind
        if self.cfg.kind == "mlp":
            from pipeline.heads.mlp import EmbeddingMLP
            c = self.cfg
            self.models = [EmbeddingMLP(t, c.hidden, c.dropout, c.epochs, c.lr, self.C).fit(
                Xn, y, None if X_cal is None else self._norm(X_cal), y_cal)]
            return self
        if t.kind == "regression" or self.cfg.kind == "ridge":
            cols = self._regression_targets(y)
            self.models = [self._make(True, Xn).fit(Xn, cols[:, k]) for k in range(cols.shape[1])]
            return self
        ys = self.label_columns(y)
        self.models = [self._make(False, Xn).fit(Xn, yk) for yk in ys]
        if calibrate and self.needs_calibration:
            if self.cfg.calibration == "valid":
                if X_cal is None:
                    raise PipelineError("heads calibration 'valid' needs the valid split")
                # one SVC pass over the valid rows serves the calibrators and heldout_scores(X_cal)
                self._cal_margins = (X_cal, self.margins(X_cal))
            self.calibrators = [self._calibrate(m, Xn, yk, X_cal, y_cal, k)
                                for k, (m, yk) in enumerate(zip(self.models, ys))]
        return self

    def label_columns(self, y: np.ndarray) -> list[np.ndarray]:
        """Class ids per estimator: one 0/1 column per label for multilabel, else the single id vector."""
        if self.task.kind == "multilabel":
            return [y[:, k].astype(int) for k in range(y.shape[1])]
        return [np.asarray(y).astype(int)]

    def _from_proba(self, probs: list[np.ndarray]) -> np.ndarray:
        """Per-estimator class probabilities -> scores (N, K) as described in tasks.py."""
        if self.task.kind == "multilabel":
            return np.column_stack([p[:, 1] for p in probs])
        return probs[0][:, 1:2] if self.task.kind == "binary" else probs[0]

    @property
    def needs_calibration(self) -> bool:
        return self.cfg.kind == "svm" and self.cfg.calibration != "none" and self.task.kind != "regression"

    def margins(self, X: np.ndarray) -> list[np.ndarray]:
        """Raw SVC decision scores, one (N, 1 or K) array per estimator."""
        if len(X) > SCORE_ROWS:
            parts = [self.margins(X[a:a + SCORE_ROWS]) for a in range(0, len(X), SCORE_ROWS)]
            return [np.vstack(p) for p in zip(*parts)]
        Xn = self._norm(X)
        return [_margins(m, Xn) for m in self.models]

    def heldout_scores(self, X: np.ndarray, y: np.ndarray, k: int = 5) -> np.ndarray:
        """Scores of the calibration split itself, each row from a calibrator fit on the other folds.

        With calibration 'valid' the Platt step is fit on valid, so `scores(X_valid)` would be in-sample: a
        multinomial calibrator over 10 classes fits 110 numbers on a few hundred rows and its valid loss looks
        far better than its test loss, which misleads C selection and the ensemble weights.
        """
        if not (self.needs_calibration and self.cfg.calibration == "valid"):
            return self.scores(X)
        from sklearn.model_selection import KFold

        ms = self._cal_margins[1] if self._cal_margins and self._cal_margins[0] is X else self.margins(X)
        ys = self.label_columns(y)
        probs = [np.zeros((len(X), len(np.unique(yk)))) for yk in ys]
        for tr, te in KFold(k, shuffle=True, random_state=0).split(X):
            for e, (d, yk) in enumerate(zip(ms, ys)):
                cal = platt(d[tr], yk[tr])
                # a fold may miss a rare class: put each calibrator column where its class belongs
                probs[e][np.ix_(te, np.searchsorted(np.unique(yk), cal.classes_))] = cal.predict_proba(d[te])
        return self._from_proba(probs)

    def _calibrate(self, m, Xn, y, X_cal, y_cal, k: int):
        """Platt scaling: a logistic regression from margins to labels (multinomial for multiclass)."""
        from sklearn.model_selection import StratifiedKFold

        if self.cfg.calibration == "valid":
            d, yc = self._cal_margins[1][k], (y_cal[:, k] if y_cal.ndim == 2 else y_cal).astype(int)
        else:  # cv: margins of models that did not see the row
            d = np.zeros((len(Xn), 1 if len(np.unique(y)) == 2 else len(np.unique(y))))
            for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(Xn, y):
                d[te] = _margins(self._make(False, Xn[tr]).fit(Xn[tr], y[tr]), Xn[te])
            yc = y
        return platt(d, yc)

    def _regression_targets(self, y: np.ndarray) -> np.ndarray:
        t = self.task
        if t.kind == "regression":
            return t.to_unit(y)[:, None]
        if t.kind == "multiclass":
            return np.eye(len(t.classes))[y]
        return np.asarray(y, dtype=np.float64).reshape(len(y), -1)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """X (N, D) -> scores (N, K) as described in tasks.py, `SCORE_ROWS` rows at a time."""
        if len(X) > SCORE_ROWS:
            return np.vstack([self.scores(X[a:a + SCORE_ROWS]) for a in range(0, len(X), SCORE_ROWS)])
        Xn = self._norm(X)
        t = self.task
        if self.cfg.kind == "mlp":
            return self.models[0].scores(Xn)
        if t.kind == "regression" or self.cfg.kind == "ridge":
            out = np.clip(np.column_stack([_np(m.predict(Xn)) for m in self.models]), 0, 1)
            if t.kind == "regression":
                return t.from_unit(out)
            return out / np.maximum(out.sum(1, keepdims=True), 1e-12) if t.kind == "multiclass" else out
        return self._from_proba([self._proba(m, Xn) for m in self.models])

    def _proba(self, m, Xn: np.ndarray) -> np.ndarray:
        if self.cfg.kind != "svm":
            return _np(m.predict_proba(Xn))
        d = _margins(m, Xn)
        if self.cfg.calibration != "none":
            return self.calibrators[self.models.index(m)].predict_proba(d)
        if d.shape[1] == 1:  # binary margin -> sigmoid
            p1 = 1 / (1 + np.exp(-d[:, 0]))
            return np.column_stack([1 - p1, p1])
        e = np.exp(d - d.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def platt(d: np.ndarray, y: np.ndarray):
    """Margins (N, m) -> calibrated probabilities: an (almost) unregularized logistic regression."""
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=1e4, max_iter=1000).fit(d, y)


def _margins(m, Xn: np.ndarray) -> np.ndarray:
    """Decision scores as (N, 1) for binary, (N, K) one-vs-rest for multiclass."""
    d = _np(m.decision_function(Xn))
    return d[:, None] if d.ndim == 1 else d


def _np(a) -> np.ndarray:
    """cuML returns cupy/cudf objects; bring them to host numpy."""
    if hasattr(a, "get"):
        a = a.get()
    if hasattr(a, "to_numpy"):
        a = a.to_numpy()
    return np.asarray(a, dtype=np.float64)


def kernel_approximated(cfg: HeadParams, backend: str, n_rows: int) -> bool:
    """A kernel SVM on more than `max_kernel_rows` rows is fit as Nystroem + linear SVM on the CPU: an exact
    kernel SVC's fit grows about quadratically in rows (benchmarks/RESULTS.md). cuML fits it exactly."""
    return cfg.kind == "svm" and cfg.kernel != "linear" and n_rows > cfg.max_kernel_rows and backend != "cuml"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or a batch job's share), not the
    machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def n_jobs(cfg: HeadParams, backend: str, n_rows: int = 0) -> int:
    """Threads for the independent fits of a head (C grid x folds) on `n_rows` train rows. auto: every usable
    core for scikit-learn's exact SVC, whose libsvm fit is single-threaded and releases the GIL; 1 for the
    rest, which already use every core (sklearnex, BLAS-backed solvers, torch) or a GPU, and for the Nystroem
    approximation (each fit holds rows x 1000 floats: 4 GB at 1M rows). Threads, not processes: no worker
    re-imports scikit-learn (1.7 s each), and results are bit-identical to the sequential fits."""
    if cfg.kind == "mlp":  # torch's global RNG drives its dropout: fits in threads would not be reproducible
        return 1
    if cfg.n_jobs != "auto":
        return int(cfg.n_jobs)
    exact_svm = cfg.kind == "svm" and not kernel_approximated(cfg, backend, n_rows)
    return usable_cores() if backend == "sklearn" and exact_svm else 1


def fit_all(fn: Callable, items: Sequence, jobs: int) -> list:
    """[fn(x) for x in items], on `jobs` threads when jobs > 1, results in the order of `items`.
    Threads, not processes: the estimators release the GIL in their C loops, and nothing is pickled
    (a pickle-based process pool would break the rule tests/train/test_resume.py enforces)."""
    if jobs <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(jobs, len(items))) as pool:
        return list(pool.map(fn, items))


def fit_head(cfg: HeadParams, task: Task, X_train, y_train, X_valid, y_valid) -> tuple[Head, dict]:
    """Fit one head; with C_grid, one per C (in parallel: `n_jobs`), keeping the best on validation.
    Returns (head, search report)."""
    backend = resolve_backend(cfg.backend)
    grid = cfg.C_grid or [cfg.C]
    jobs = n_jobs(cfg, backend, len(X_train))

    def one(C):
        head = Head(cfg, task, backend, C).fit(X_train, y_train, X_valid, y_valid)
        return head, task.selection_loss(y_valid, head.heldout_scores(X_valid, y_valid))
    report, best, best_loss = {"backend": backend, "n_jobs": jobs, "grid": {}}, None, np.inf
    for C, (head, loss) in zip(grid, fit_all(one, grid, jobs)):
        report["grid"][str(C)] = loss
        log.info("head %s C=%g backend=%s valid loss %.4f", cfg.kind, C, backend, loss)
        if loss < best_loss:
            best, best_loss = head, loss
    report.update(C=best.C, valid_loss=best_loss, kernel_approximation=best.approx)
    return best, report
