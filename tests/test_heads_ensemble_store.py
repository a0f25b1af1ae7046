import numpy as np
import pandas as pd
import pytest
import zarr

from pipeline import PipelineError
from pipeline.ensemble import combine, fit_weights, simplex_grid
from pipeline.heads import fit_head, resolve_backend
from pipeline.params import HeadParams
from pipeline.store import read_embeddings, read_features, write_embeddings
from pipeline.tasks import Task


def blobs(n=300, d=8, k=2, seed=0, sep=2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) + sep * np.eye(k, d)[y]
    return X.astype(np.float32), y


@pytest.mark.parametrize("kind", ["svm", "logistic", "ridge", "knn"])
@pytest.mark.parametrize("k", [2, 3])
def test_heads_learn_and_give_probabilities(kind, k):
    X, y = blobs(k=k, sep=3.0)
    task = Task("binary" if k == 2 else "multiclass", classes=[str(i) for i in range(k)])
    head, rep = fit_head(HeadParams(kind=kind), task, X[:200], y[:200], X[200:250], y[200:250])
    s = head.scores(X[250:])
    assert s.shape == (50, task.n_outputs) and np.all((s >= 0) & (s <= 1))
    assert task.metrics(y[250:], s)["accuracy"] > 0.8 and rep["backend"] == "sklearn"


def test_svr_regression_on_unit_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = 50 + 20 * X[:, 0]
    task = Task("regression", y_min=float(y.min()), y_max=float(y.max()))
    head, _ = fit_head(HeadParams(kind="svm", C=10), task, X[:200], y[:200], X[200:250], y[200:250])
    assert task.metrics(y[250:], head.scores(X[250:]))["rmse"] < 0.4 * y.std()  # epsilon tube: 6.5 units


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


def test_forced_cuml_without_gpu_is_a_clear_error():
    with pytest.raises(PipelineError, match="backend 'cuml' needs an NVIDIA GPU"):
        resolve_backend("cuml")
    assert resolve_backend("auto") == "sklearn"


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
    index = pd.DataFrame({"id": [f"i{i}" for i in range(1000)], "label": ["a"] * 1000, "split": ["train"] * 1000})
    write_embeddings(tmp_path / "a", X, index, dtype=dtype, chunk_rows=256)
    arr = zarr.open_array(str(tmp_path / "a" / "vectors.zarr"), mode="r")
    assert arr.dtype == np.dtype(dtype) and arr.chunks == (256, 16)
    assert sum(1 for p in (tmp_path / "a").rglob("*") if p.is_file()) <= 8  # few files per store
    Y, idx = read_embeddings(tmp_path / "a")
    assert np.allclose(X, Y, atol=1e-2 if dtype == "float16" else 0) and idx["row"].tolist() == list(range(1000))
    write_embeddings(tmp_path / "b", X[:, :4], index)
    F, _ = read_features([tmp_path / "a", tmp_path / "b"])
    assert F.shape == (1000, 20)
    write_embeddings(tmp_path / "c", X, index.assign(id=index["id"][::-1].values))
    with pytest.raises(PipelineError, match="rows do not match"):
        read_features([tmp_path / "a", tmp_path / "c"])
