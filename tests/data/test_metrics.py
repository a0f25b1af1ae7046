"""pipeline/data/metrics.py equals scikit-learn's metrics (and SciPy's rankdata) on inputs with ties, absent
classes and single-class labels; the evaluate and ensemble stages import neither library."""
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn import metrics as skm

from pipeline.data.metrics import binary_auc, f1_per_class, midranks, precision_recall, r2, roc_curve, support
from pipeline.data.tasks import Task

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("n, levels", [(200, 5), (500, 1000), (7, 2), (1, 3)])
def test_midranks_and_auc_match_scipy_and_sklearn(n, levels):
    for _ in range(20):
        s = RNG.integers(0, levels, n) / levels  # few levels: many ties
        y = RNG.integers(0, 2, n)
        np.testing.assert_allclose(midranks(s), rankdata(s))
        if 0 < y.sum() < n:
            assert binary_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
            fpr, tpr = roc_curve(y, s)
            f2, t2, _ = skm.roc_curve(y, s)
            np.testing.assert_allclose(fpr, f2)
            np.testing.assert_allclose(tpr, t2)
        else:
            assert np.isnan(binary_auc(y, s))


def test_f1_precision_recall_match_sklearn_with_absent_classes():
    for _ in range(20):
        y, pred = RNG.integers(0, 3, 60), RNG.integers(0, 4, 60)  # class 3 never true; some never predicted
        pred[pred == 3] = 0
        p, r, f, n = skm.precision_recall_fscore_support(y, pred, labels=[0, 1, 2, 3], zero_division=0)
        np.testing.assert_allclose(f1_per_class(y, pred, 4), f)
        np.testing.assert_allclose(np.column_stack(precision_recall(y, pred, 4)), np.column_stack([p, r]))
        np.testing.assert_array_equal(support(y, 4), n)
        Y, P = RNG.integers(0, 2, (40, 5)), RNG.integers(0, 2, (40, 5))
        Y[:, 0] = 0
        P[:, 0] = 0
        np.testing.assert_allclose(f1_per_class(Y, P), skm.f1_score(Y, P, average=None, zero_division=0))


def test_r2_matches_sklearn_also_for_a_constant_target():
    y, pred = RNG.normal(size=50), RNG.normal(size=50)
    assert r2(y, pred) == pytest.approx(skm.r2_score(y, pred))
    const = np.ones(5)
    assert r2(const, const) == skm.r2_score(const, const) == 1.0
    assert r2(const, const + 1) == skm.r2_score(const, const + 1) == 0.0


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel", "regression"])
def test_every_task_metric_matches_sklearn(kind):
    n, k = 300, 4
    task = Task(kind, classes=None if kind == "regression" else
                (["a", "b"] if kind == "binary" else [f"c{i}" for i in range(k)]))
    if kind == "binary":
        y, S = RNG.integers(0, 2, n), RNG.random((n, 1))
    elif kind == "multiclass":
        y, S = RNG.integers(0, k, n), RNG.random((n, k))
    elif kind == "multilabel":
        y, S = RNG.integers(0, 2, (n, k)), RNG.random((n, k))
    else:
        y, S = RNG.normal(size=n), RNG.normal(size=(n, 1))
    hard = task.hard(S)
    p = np.clip(S, 1e-7, 1)
    expected = {
        "accuracy": lambda: skm.accuracy_score(y, hard),
        "subset_accuracy": lambda: skm.accuracy_score(y, hard),
        "f1": lambda: skm.f1_score(y, hard, zero_division=0),
        "f1_macro": lambda: skm.f1_score(y, hard, average="macro", zero_division=0,
                                         labels=None if kind == "multilabel" else list(range(k))),
        "roc_auc": lambda: skm.roc_auc_score(y, S[:, 0]),
        "roc_auc_ovr": lambda: skm.roc_auc_score(y, p / p.sum(1, keepdims=True), multi_class="ovr",
                                                 labels=list(range(k))),
        "roc_auc_macro": lambda: skm.roc_auc_score(y, S, average="macro"),
        "log_loss": lambda: skm.log_loss(y, np.clip(S[:, 0], 1e-7, 1 - 1e-7)) if kind == "binary" else
        skm.log_loss(y, p / p.sum(1, keepdims=True), labels=list(range(k))),
        "log_loss_mean": lambda: np.mean([skm.log_loss(y[:, j], np.clip(S[:, j], 1e-7, 1 - 1e-7))
                                          for j in range(k)]),
        "rmse": lambda: np.sqrt(skm.mean_squared_error(y, S[:, 0])),
        "mae": lambda: skm.mean_absolute_error(y, S[:, 0]),
        "r2": lambda: skm.r2_score(y, S[:, 0]),
    }
    got = task.metrics(y, S)
    assert set(got) == set(task.metric_names)
    for name, value in got.items():
        assert value == pytest.approx(expected[name](), rel=1e-9, abs=1e-12), name


def test_nan_scores_and_a_single_row_give_nan():
    assert np.isnan(binary_auc(np.array([0, 1, 0, 1]), np.array([0.1, np.nan, 0.3, 0.9])))
    assert np.isnan(Task("binary", classes=["a", "b"]).metric("roc_auc", np.array([0, 1]), np.full((2, 1), np.nan)))
    assert np.isnan(r2(np.array([1.0]), np.array([2.0])))


def test_an_undefined_auc_is_nan():
    task = Task("multiclass", classes=["a", "b", "c"])
    y, S = np.array([0, 1, 0, 1]), RNG.random((4, 3))  # class c absent: its one-vs-rest AUC is undefined
    assert np.isnan(task.metric("roc_auc_ovr", y, S))
    assert np.isnan(Task("binary", classes=["a", "b"]).metric("roc_auc", np.ones(4, int), RNG.random((4, 1))))


def test_metrics_plots_and_rank_blends_load_no_sklearn_or_scipy(tmp_path):
    """Every task's metrics, its plots and a rank blend, run in a fresh interpreter: neither library loads
    (the evaluate stage would pay about 1.5 s for scikit-learn)."""
    code = f"""
import sys, numpy as np
from pipeline.data.tasks import Task
from pipeline.ensemble.blend import combine
from pipeline.ensemble.plots import write_plots
rng = np.random.default_rng(0)
for kind, y, S in [("binary", rng.integers(0, 2, 50), rng.random((50, 1))),
                   ("multiclass", rng.integers(0, 3, 50), rng.random((50, 3))),
                   ("multilabel", rng.integers(0, 2, (50, 3)), rng.random((50, 3))),
                   ("regression", rng.normal(size=50), rng.normal(size=(50, 1)))]:
    task = Task(kind, classes=None if kind == "regression" else ["a", "b"] if kind == "binary" else ["a", "b", "c"])
    m = task.metrics(y, S)
    write_plots(__import__("pathlib").Path({str(tmp_path)!r}) / kind, task, ["x"], {{"x": m}}, task.metric_names[0], y, S)
    combine([S, S], np.array([0.5, 0.5]), "rank")
print(sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
