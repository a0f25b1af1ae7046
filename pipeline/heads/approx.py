"""Kernel SVMs on more train rows than an exact SVC can take (issue 16, heads at scale).

Above `heads.<name>.max_kernel_rows` rows (on CPU: cuML fits exact kernels on a GPU) a kernel SVM is fit as
Nystroem features (the same kernel and gamma, min(1000, rows) components drawn from the rows, seeded) followed
by a linear SVM on them, in one of two ways:

- up to `stream_rows` rows, liblinear (LinearSVC / LinearSVR) on every row's features at once. liblinear
  copies them into its own float64 (index, value) pairs: about 30 kB a row with the features themselves
  (9.4 GB of peak RSS at 300k rows; benchmarks/RESULTS.md, "Heads at scale");
- above that, the features of `CHUNK` rows at a time go through an averaged SGD linear SVM (hinge, or
  epsilon-insensitive loss for regression; alpha = 1 / (C * rows), the SVM objective with LinearSVC's C),
  `EPOCHS` passes over the rows in a new seeded order each pass. Memory: one chunk's features
  (`CHUNK` x 1000 float64, 131 MB) on top of the rows' vectors and their standardized copy, whatever the
  number of rows (3.8 GB of peak RSS at 1M rows x 384, accuracy within 0.15 points of liblinear at 300k).

Either way `fit` returns a fitted scikit-learn Pipeline(Nystroem, linear model), stored and loaded like any
head (pipeline/heads/store.py's allowlist) and scored in chunks by `Head`.
"""
from __future__ import annotations

import logging

import numpy as np

from pipeline.params import HeadParams

log = logging.getLogger(__name__)

COMPONENTS = 1000
CHUNK = 16384
EPOCHS = 5


def gamma_of(cfg: HeadParams, X: np.ndarray) -> float:
    """The RBF/poly gamma an SVC would use on these (normalized) rows: 'scale' and 'auto' resolved."""
    if not isinstance(cfg.gamma, str):
        return float(cfg.gamma)
    return 1.0 / (X.shape[1] * (variance(X) if cfg.gamma == "scale" else 1.0) or 1.0)


def variance(X: np.ndarray) -> np.float32:
    """X.var() over every value, a block of rows at a time in float64: X.var() itself allocates a temporary
    as large as X (the largest allocation of a streamed fit: 1.2 GB at 1M rows x 384)."""
    blocks = range(0, len(X), CHUNK)
    mean = sum(X[a:a + CHUNK].sum(dtype=np.float64) for a in blocks) / X.size
    return np.float32(sum(np.square(X[a:a + CHUNK] - mean, dtype=np.float64).sum() for a in blocks) / X.size)


def kernel_svm(cfg: HeadParams, C: float, regression: bool, X: np.ndarray):
    """An unfitted approximate kernel SVM for the rows `X` (normalized; they set gamma and the solver).
    `.fit(X, y)` returns the fitted Pipeline."""
    from sklearn.kernel_approximation import Nystroem

    k = min(COMPONENTS, len(X))
    features = Nystroem(kernel=cfg.kernel, gamma=gamma_of(cfg, X), coef0=0, degree=3, n_components=k,
                        random_state=0)
    streamed = len(X) > cfg.stream_rows
    log.info("head svm: %d rows > max_kernel_rows %d: Nystroem (%s kernel, %d components) + linear SVM (%s)",
             len(X), cfg.max_kernel_rows, cfg.kernel, k,
             f"SGD, {EPOCHS} passes in chunks of {CHUNK} rows: rows > stream_rows {cfg.stream_rows}"
             if streamed else "liblinear")
    if streamed:
        return StreamedLinearSVM(features, C, regression, cfg.epsilon)
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC, LinearSVR

    linear = LinearSVR(C=C, epsilon=cfg.epsilon, max_iter=5000) if regression else LinearSVC(C=C, max_iter=5000)
    return make_pipeline(features, linear)


class StreamedLinearSVM:
    """Nystroem features made and consumed `CHUNK` rows at a time by an averaged SGD linear SVM. Only a
    builder: `fit` returns a plain scikit-learn Pipeline, so nothing of this class is stored."""

    def __init__(self, features, C: float, regression: bool, epsilon: float):
        self.features, self.C, self.regression, self.epsilon = features, C, regression, epsilon

    def fit(self, X: np.ndarray, y: np.ndarray):
        from sklearn.linear_model import SGDClassifier, SGDRegressor
        from sklearn.pipeline import Pipeline

        n = len(X)
        self.features.fit(X)  # draws its components from the rows; reads only those
        # "optimal": step 1 / (alpha (t + t0)), the Pegasos schedule for this objective (SGDRegressor would
        # default to invscaling, which was far from converged in the same passes)
        common = dict(alpha=1.0 / (self.C * n), learning_rate="optimal", average=True, random_state=0)
        linear = SGDRegressor(loss="epsilon_insensitive", epsilon=self.epsilon, **common) if self.regression \
            else SGDClassifier(loss="hinge", **common)
        classes = None if self.regression else np.unique(y)
        rng = np.random.default_rng(0)
        for _ in range(EPOCHS):
            order = rng.permutation(n)
            for a in range(0, n, CHUNK):
                rows = np.sort(order[a:a + CHUNK])  # a sorted gather reads memory in order; the draw stays random
                Z = self.features.transform(X[rows])
                if classes is None:
                    linear.partial_fit(Z, y[rows])
                else:
                    linear.partial_fit(Z, y[rows], classes=classes)
        return Pipeline([("nystroem", self.features), ("linear", linear)])
