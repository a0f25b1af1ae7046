import numpy as np
import pandas as pd
import pytest
import zarr

from pipeline import PipelineError
from pipeline.ensemble.blend import combine, fit_weights, simplex_grid
from pipeline.heads.folds import fit_folded
from pipeline.heads.estimators import fit_head, resolve_backend, sklearnex_available
from pipeline.params import HeadParams
from pipeline.cache.store import read_embeddings, read_features, write_embeddings
from pipeline.data.tasks import Task


def blobs(n=300, d=8, k=2, seed=0, sep=2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) + sep * np.eye(k, d)[y]
    return X.astype(np.float32), y


@pytest.mark.parametrize("kind", ["svm", "logistic", "ridge", "knn", "mlp"])
@pytest.mark.parametrize("k", [2, 3])
def test_heads_learn_and_give_probabilities(kind, k):
    X, y = blobs(k=k, sep=3.0)
    task = Task("binary" if k == 2 else "multiclass", classes=[str(i) for i in range(k)])
    head, rep = fit_head(HeadParams(kind=kind), task, X[:200], y[:200], X[200:250], y[200:250])
    s = head.scores(X[250:])
    assert s.shape == (50, task.n_outputs) and np.all((s >= 0) & (s <= 1))
    assert task.metrics(y[250:], s)["accuracy"] > 0.8 and rep["backend"] in ("sklearn", "sklearnex")


def test_svr_regression_on_unit_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = 50 + 20 * X[:, 0]
    task = Task("regression", y_min=float(y.min()), y_max=float(y.max()))
    head, _ = fit_head(HeadParams(kind="svm", C=10), task, X[:200], y[:200], X[200:250], y[200:250])
    assert task.metrics(y[250:], head.scores(X[250:]))["rmse"] < 0.4 * y.std()  # epsilon tube: 6.5 units


def test_mlp_head_regresses_with_bce_on_the_unit_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4)).astype(np.float32)
    y = 50 + 20 * np.tanh(X[:, 0])
    task = Task("regression", y_min=float(y.min()), y_max=float(y.max()))
    head, _ = fit_head(HeadParams(kind="mlp", hidden=32, epochs=100), task, X[:300], y[:300], X[300:350], y[300:350])
    s = head.scores(X[350:])
    assert np.all((s >= y.min()) & (s <= y.max()))  # sigmoid, scaled back: never outside the train range
    assert task.metrics(y[350:], s)["rmse"] < 0.3 * y.std()


def test_C_grid_picks_the_best_on_valid_and_records_it():
    X, y = blobs(sep=1.0)
    task = Task("binary", classes=["0", "1"])
    head, rep = fit_head(HeadParams(kind="logistic", C_grid=[1e-4, 1.0]), task, X[:200], y[:200], X[200:], y[200:])
    assert set(rep["grid"]) == {"0.0001", "1.0"} and rep["C"] == 1.0 and rep["grid"]["1.0"] < rep["grid"]["0.0001"]


def test_svm_calibrations_agree_on_ranking():
    X, y = blobs()
    task = Task("binary", classes=["0", "1"])
    out = {c: fit_head(HeadParams(calibration=c), task, X[:200], y[:200], X[200:250], y[200:250])[0].scores(X[250:])
           for c in ("valid", "cv", "none")}
    order = np.argsort(out["none"][:, 0])
    for c in ("valid", "cv"):
        assert np.all(np.diff(out[c][order, 0]) >= -1e-9)  # Platt is monotone in the margin


def test_folded_predictions_are_out_of_fold():
    # 1-NN remembers every training row: in-sample it is always right, out of fold it is right only when the
    # label agrees with the nearest *other* row (about 60% here, with 30% label noise).
    X, y = blobs(n=400, sep=3.0)
    y = np.where(np.random.default_rng(1).uniform(size=400) < 0.3, 1 - y, y)
    task = Task("binary", classes=["0", "1"])
    head, oof, rep = fit_folded(HeadParams(kind="knn", n_neighbors=1), task, X, y, 4, seed=0)
    assert task.metrics(y, head.scores(X))["accuracy"] == 1.0 and len(head.heads) == 4
    assert 0.5 < task.metrics(y, oof)["accuracy"] < 0.75 and rep["oof_loss"] == task.selection_loss(y, oof)


def test_folded_svm_shares_one_calibrator_and_grid_uses_oof_loss():
    X, y = blobs(n=300, sep=1.0)
    task = Task("binary", classes=["0", "1"])
    head, oof, rep = fit_folded(HeadParams(C_grid=[1e-3, 1.0]), task, X, y, 3, seed=0)
    assert len({id(h.calibrators[0]) for h in head.heads}) == 1
    assert rep["C"] == 1.0 and rep["grid"]["1.0"] < rep["grid"]["0.001"] and head.C == 1.0
    s = head.scores(X)
    assert s.shape == (300, 1) and np.all((s > 0) & (s < 1)) and np.all((oof > 0) & (oof < 1))
    assert task.metrics(y, oof)["roc_auc"] > 0.8


@pytest.mark.parametrize("kind, k", [("multiclass", 3), ("multilabel", 2), ("regression", 0)])
def test_folded_heads_for_every_task(kind, k):
    X, y = blobs(n=240, k=max(k, 2), sep=3.0)
    if kind == "multiclass":
        task = Task(kind, classes=["a", "b", "c"])
    elif kind == "multilabel":
        y, task = np.column_stack([y, 1 - y]), Task(kind, classes=["a", "b"])
    else:
        y, task = 10 * X[:, 0] + 5, Task(kind, y_min=float((10 * X[:, 0] + 5).min()), y_max=float((10 * X[:, 0] + 5).max()))
    head, oof, _ = fit_folded(HeadParams(), task, X, y, 3, seed=0)
    assert oof.shape == (240, task.n_outputs) and head.scores(X[:5]).shape == (5, task.n_outputs)
    assert np.isfinite(task.selection_loss(y, oof))


def test_folds_errors_are_clear():
    X, y = blobs(n=20)
    y[:] = 0
    y[:2] = 1
    with pytest.raises(PipelineError, match="a class has fewer than 3"):
        fit_folded(HeadParams(), Task("binary", classes=["0", "1"]), X, y, 3, seed=0)
    with pytest.raises(ValueError, match="folds must be 0"):
        HeadParams(folds=1)


def test_valid_scores_of_a_valid_calibrated_svm_are_cross_fitted():
    # A calibrator fit on valid must not score its own rows: flipping the label of valid row i changes the
    # calibrators that score other rows, never the score of row i itself.
    X, y = blobs(n=600, d=12, k=4, sep=1.5)
    task = Task("multiclass", classes=[str(i) for i in range(4)])
    head, rep = fit_head(HeadParams(), task, X[:400], y[:400], X[400:], y[400:])
    yv = y[400:].copy()
    base = head.heldout_scores(X[400:], yv)
    assert rep["valid_loss"] == pytest.approx(task.selection_loss(yv, base))
    for i in (0, 17, 101):
        flipped = yv.copy()
        flipped[i] = (flipped[i] + 1) % 4
        again = head.heldout_scores(X[400:], flipped)
        assert np.allclose(again[i], base[i]) and not np.allclose(again, base)


def test_forced_cuml_without_gpu_is_a_clear_error():
    with pytest.raises(PipelineError, match="backend 'cuml' needs an NVIDIA GPU"):
        resolve_backend("cuml")
    assert resolve_backend("auto") == ("sklearnex" if sklearnex_available() else "sklearn")


@pytest.mark.skipif(not sklearnex_available(), reason="scikit-learn-intelex not installed")
@pytest.mark.parametrize("kind", ["svm", "logistic", "knn"])
def test_sklearnex_gives_the_scores_of_sklearn(kind):
    X, y = blobs(n=400, sep=1.0)
    task = Task("binary", classes=["0", "1"])
    s = {b: fit_head(HeadParams(kind=kind, backend=b), task, X[:250], y[:250], X[250:320], y[250:320])[0]
         .scores(X[320:]) for b in ("sklearn", "sklearnex")}
    assert np.allclose(s["sklearn"], s["sklearnex"], atol=2e-3)


def test_simplex_and_weights():
    g = simplex_grid(3, 0.25)
    assert np.allclose(g.sum(1), 1) and (g >= 0).all() and len(g) == 15
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    good = np.clip(y[:, None] * 0.8 + 0.1 + rng.normal(0, 0.05, (500, 1)), 0, 1)
    noise = rng.uniform(size=(500, 1))
    task = Task("binary", classes=["0", "1"])
    w, loss = fit_weights(task, y, [noise, good], 0.1)
    assert w.tolist() == pytest.approx([0.0, 1.0]) and loss == pytest.approx(task.selection_loss(y, good))
    assert combine([noise, good], np.array([0.5, 0.5])) == pytest.approx((noise + good) / 2)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_zarr_parquet_roundtrip(tmp_path, dtype):
    X = np.random.default_rng(0).normal(size=(1000, 16)).astype(np.float32)
    index = pd.DataFrame({"id": [f"i{i}" for i in range(1000)], "input_hash": [f"h{i}" for i in range(1000)]})
    write_embeddings(tmp_path / "a", X, index, dtype=dtype, chunk_rows=256)
    arr = zarr.open_array(str(tmp_path / "a" / "vectors.zarr"), mode="r")
    assert arr.dtype == np.dtype(dtype) and arr.chunks == (256, 16)
    assert sum(1 for p in (tmp_path / "a").rglob("*") if p.is_file()) <= 8  # few files per store
    Y, idx = read_embeddings(tmp_path / "a")
    assert np.allclose(X, Y, atol=1e-2 if dtype == "float16" else 0) and idx["row"].tolist() == list(range(1000))
    assert list(idx.columns) == ["id", "row", "input_hash"]  # no labels: they come from artifacts/data
    write_embeddings(tmp_path / "b", X[:, :4], index)
    F, _ = read_features([tmp_path / "a", tmp_path / "b"])
    assert F.shape == (1000, 20)
    write_embeddings(tmp_path / "c", X, index.assign(id=index["id"][::-1].values))
    with pytest.raises(PipelineError, match="rows do not match"):
        read_features([tmp_path / "a", tmp_path / "c"])


@pytest.mark.parametrize("calibration", ["valid", "cv"])
def test_a_kernel_svm_above_max_kernel_rows_is_nystroem_plus_a_linear_svm(calibration, caplog, tmp_path):
    """An RBF problem a linear SVM cannot solve (a ring): the approximation keeps the kernel's accuracy."""
    import logging

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4)).astype(np.float32)
    y = (np.linalg.norm(X[:, :2], axis=1) > 1.2).astype(int)
    task = Task("binary", classes=["0", "1"])
    args = (task, X[:300], y[:300], X[300:400], y[300:400])
    with caplog.at_level(logging.INFO):
        approx, rep = fit_head(HeadParams(kind="svm", max_kernel_rows=100, calibration=calibration), *args)
    exact, rep_exact = fit_head(HeadParams(kind="svm", calibration=calibration), *args)
    assert rep["kernel_approximation"] and not rep_exact["kernel_approximation"]
    assert "300 rows > max_kernel_rows 100: Nystroem (rbf kernel, 300 components)" in caplog.text
    assert type(approx.models[0]).__name__ == "Pipeline" and type(exact.models[0]).__name__.endswith("SVC")
    acc = {name: task.metrics(y[400:], h.scores(X[400:]))["accuracy"] for name, h in [("a", approx), ("e", exact)]}
    assert acc["a"] > 0.85 and acc["a"] > acc["e"] - 0.05, acc
    from pipeline.heads.store import load_head, save_head
    save_head(approx, tmp_path)  # the stored head (allowlisted unpickler) predicts the same
    assert np.array_equal(load_head(tmp_path).scores(X[400:]), approx.scores(X[400:]))


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_above_stream_rows_the_approximate_svm_fits_and_scores_a_chunk_of_features_at_a_time(
        kind, monkeypatch, caplog, tmp_path):
    """Past stream_rows no step sees more than a chunk of rows' Nystroem features, in the fit (CHUNK) or in
    scoring (SCORE_ROWS), and the streamed SGD SVM does about as well as liblinear on all the features at once
    (the ring again: a linear SVM on the raw vectors cannot solve it)."""
    import logging

    from sklearn.kernel_approximation import Nystroem

    from pipeline.heads import approx, estimators
    from pipeline.heads.store import load_head, save_head

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1400, 4)).astype(np.float32)
    r = np.linalg.norm(X[:, :2], axis=1)
    if kind == "regression":
        y, task, metric = r, Task("regression", y_min=float(r.min()), y_max=float(r.max())), "rmse"
    else:
        y = np.digitize(r, [0.9, 1.5]) if kind == "multiclass" else (r > 1.2).astype(int)
        task, metric = Task(kind, classes=[str(c) for c in np.unique(y)]), "accuracy"
    seen, transform = [], Nystroem.transform
    monkeypatch.setattr(Nystroem, "transform", lambda self, Z: seen.append(len(Z)) or transform(self, Z))
    monkeypatch.setattr(approx, "CHUNK", 128)
    monkeypatch.setattr(approx, "EPOCHS", 20)  # 1,000 rows: SGD needs more passes than at stream_rows' scale
    monkeypatch.setattr(estimators, "SCORE_ROWS", 150)
    args = (task, X[:1000], y[:1000], X[1000:1200], y[1000:1200])
    with caplog.at_level(logging.INFO):
        streamed, rep = fit_head(HeadParams(kind="svm", max_kernel_rows=100, stream_rows=500), *args)
        s = streamed.scores(X[1200:])
    assert "1000 rows > max_kernel_rows 100" in caplog.text and "SGD, 20 passes in chunks of 128 rows" in caplog.text
    assert rep["kernel_approximation"] and seen and max(seen) <= 150, seen
    whole, _ = fit_head(HeadParams(kind="svm", max_kernel_rows=100), *args)  # 1000 rows <= stream_rows: liblinear
    got, ref = task.metrics(y[1200:], s)[metric], task.metrics(y[1200:], whole.scores(X[1200:]))[metric]
    if kind == "regression":
        assert got < 1.25 * ref and got < 0.5 * y.std(), (got, ref)
    else:
        assert got > ref - 0.05 and got > 0.8, (got, ref)
    save_head(streamed, tmp_path)  # a plain Pipeline(Nystroem, SGD): the allowlisted unpickler reads it
    assert np.array_equal(load_head(tmp_path).scores(X[1200:]), s)


@pytest.mark.parametrize("normalize", ["standard", "l2"])
def test_normalizing_the_train_rows_holds_one_copy_and_equals_the_whole_matrix_expressions(normalize):
    """At 1M train rows each (N, D) float32 temporary is 1.5 GB: the fit's normalization allocates its result
    and blocks, not the temporaries of X.std(0), X - mean or X * X; and its values are those expressions'."""
    import tracemalloc

    from pipeline.heads.estimators import Head

    X = (np.random.default_rng(0).normal(size=(150_000, 64)) * 3 + 1).astype(np.float32)
    head = Head(HeadParams(kind="svm", normalize=normalize), Task("binary", classes=["0", "1"]), "sklearn")
    tracemalloc.start()
    Xn = head._norm(X, fit=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1.3 * X.nbytes, peak / X.nbytes
    if normalize == "l2":
        ref = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    else:
        ref = (X - X.mean(0)) / (X.std(0) + 1e-6)
    assert Xn.dtype == np.float32 and np.array_equal(Xn, ref)
    assert np.array_equal(head._norm(X[:100]), ref[:100])  # scoring applies the fit's moments


def test_the_approximate_svms_gamma_reads_its_rows_a_block_at_a_time():
    """'scale' gamma needs the variance of every value; X.var() would allocate a temporary as large as X."""
    import tracemalloc

    from pipeline.heads.approx import CHUNK, gamma_of

    X = (np.random.default_rng(0).normal(size=(24 * CHUNK, 16)) * 2 + 0.5).astype(np.float32)
    tracemalloc.start()
    gamma = gamma_of(HeadParams(kind="svm"), X)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert gamma == pytest.approx(1 / (16 * X.astype(np.float64).var()), rel=1e-6)
    assert peak < 0.5 * X.nbytes, peak / X.nbytes


def test_fit_all_runs_items_at_once_on_threads_and_keeps_their_order():
    import threading

    from pipeline.heads.estimators import fit_all

    gate = threading.Barrier(2, timeout=20)  # passes only when two items run at the same time

    def fn(x):
        gate.wait()
        return x * 10
    assert fit_all(fn, [1, 2, 3, 4], jobs=2) == [10, 20, 30, 40]
    assert fit_all(lambda x: x + 1, [1, 2], jobs=1) == [2, 3]


def test_n_jobs_auto_uses_every_core_only_for_single_threaded_svm_fits():
    import os

    from pipeline.heads.estimators import n_jobs

    assert n_jobs(HeadParams(kind="svm"), "sklearn") == len(os.sched_getaffinity(0))  # this process's cores
    assert n_jobs(HeadParams(kind="svm", max_kernel_rows=100), "sklearn", 101) == 1  # Nystroem: rows x 1000 each
    assert n_jobs(HeadParams(kind="svm"), "sklearnex") == 1  # already multithreaded: 0.89x in threads
    assert n_jobs(HeadParams(kind="logistic"), "sklearn") == 1
    assert n_jobs(HeadParams(kind="svm", n_jobs=3), "sklearnex") == 3
    assert n_jobs(HeadParams(kind="mlp", n_jobs=3), "sklearn") == 1  # torch's global RNG: not in threads


@pytest.mark.parametrize("folds", [0, 3])
def test_parallel_grid_and_folds_fit_on_threads_and_equal_the_sequential_fits(folds, monkeypatch):
    """Every (C, fold) fit runs on worker threads, two at once (the first two meet at a barrier, which
    times out if they ran one after another), and the chosen head, its scores and the report are the same
    as with n_jobs 1: threads change when a fit runs, not what it computes."""
    import threading

    from pipeline.heads import estimators

    threads, real_fit, calls = set(), estimators.Head.fit, []

    def recording_fit(self, *a, **kw):
        threads.add(threading.get_ident())
        calls.append(None)
        if jobs == 2 and len(calls) <= 2:
            meet.wait(timeout=10)
        return real_fit(self, *a, **kw)
    X, y = blobs(n=300, k=3, sep=1.0)
    task = Task("multiclass", classes=["a", "b", "c"])
    out = {}
    for jobs in (1, 2):
        cfg = HeadParams(kind="svm", backend="sklearn", C_grid=[0.1, 1.0, 10.0], n_jobs=jobs)
        threads.clear(), calls.clear()
        meet = threading.Barrier(2)
        monkeypatch.setattr(estimators.Head, "fit", recording_fit)
        if folds:
            head, oof, rep = fit_folded(cfg, task, X, y, folds, seed=0)
        else:
            (head, rep), oof = fit_head(cfg, task, X[:200], y[:200], X[200:250], y[200:250]), None
        monkeypatch.setattr(estimators.Head, "fit", real_fit)
        out[jobs] = (head.scores(X[250:]), oof, rep, set(threads))
    assert out[1][3] == {threading.get_ident()} and threading.get_ident() not in out[2][3]
    assert len(out[2][3]) == 2 and out[2][2]["n_jobs"] == 2
    assert np.array_equal(out[1][0], out[2][0]) and (folds == 0 or np.array_equal(out[1][1], out[2][1]))
    assert {k: v for k, v in out[1][2].items() if k != "n_jobs"} == {k: v for k, v in out[2][2].items() if k != "n_jobs"}
