"""Stored heads (pipeline/heads/store.py): exact round trip for every kind and backend, and tampered files are
refused without running anything they contain."""
import json
import pickle

import numpy as np
import pytest

from pipeline import PipelineError
from pipeline.heads.folds import fit_folded
from pipeline.heads.store import ESTIMATORS, load_head, save_head
from pipeline.heads.estimators import fit_head, sklearnex_available
from pipeline.params import HeadParams
from pipeline.data.tasks import Task
from tests.heads.test_heads import blobs

BACKENDS = ["sklearn"] + (["sklearnex"] if sklearnex_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["svm", "logistic", "ridge", "knn", "mlp"])
def test_stored_head_gives_identical_scores(tmp_path, kind, backend):
    X, y = blobs(n=240, k=3)
    task = Task("multiclass", classes=["a", "b", "c"])
    cfg = HeadParams(kind=kind, backend=backend, epochs=3)
    head, _ = fit_head(cfg, task, X[:160], y[:160], X[160:200], y[160:200])
    save_head(head, tmp_path)
    assert not list(tmp_path.glob("*.joblib"))
    assert np.array_equal(load_head(tmp_path).scores(X[200:]), head.scores(X[200:]))


def test_stored_folded_head_gives_identical_scores(tmp_path):
    X, y = blobs(n=200)
    head, _, _ = fit_folded(HeadParams(), Task("binary", classes=["n", "p"]), X[:150], y[:150], 3, seed=0)
    save_head(head, tmp_path)
    loaded = load_head(tmp_path)
    assert len(loaded.heads) == 3 and np.array_equal(loaded.scores(X[150:]), head.scores(X[150:]))


@pytest.mark.skipif(not sklearnex_available(), reason="needs scikit-learn-intelex")
@pytest.mark.parametrize("kind", ["binary", "regression", "multiclass"])
def test_a_sklearnex_svm_is_stored_with_one_copy_of_its_support_vectors(tmp_path, kind):
    """The oneDAL model object repeats the support vectors; it is left out of the file where oneDAL rebuilds
    it (binary, regression) and the loaded head still scores exactly like the fitted one."""
    X, y = blobs(n=900, d=64, k=3 if kind == "multiclass" else 2, sep=1.0)
    task = {"binary": Task("binary", classes=["n", "p"]), "multiclass": Task("multiclass", classes=["a", "b", "c"]),
            "regression": Task("regression", y_min=0.0, y_max=1.0)}[kind]
    target = X[:, :2].sum(1) if kind == "regression" else y
    target = (target - target.min()) / np.ptp(target) if kind == "regression" else target
    head, _ = fit_head(HeadParams(backend="sklearnex"), task, X[:600], target[:600], X[600:750], target[600:750])
    save_head(head, tmp_path)
    vectors = sum(m.support_vectors_.nbytes for m in head.models)
    size = (tmp_path / ESTIMATORS).stat().st_size
    assert (size > 1.8 * vectors) if kind == "multiclass" else (size < 1.2 * vectors), (size, vectors)
    assert all(m._onedal_estimator._onedal_model is not None for m in head.models)  # the fitted head keeps its own
    assert np.array_equal(load_head(tmp_path).scores(X[750:]), head.scores(X[750:]))


@pytest.fixture()
def stored(tmp_path):
    X, y = blobs(n=120)
    head, _ = fit_head(HeadParams(), Task("binary", classes=["n", "p"]), X[:80], y[:80], X[80:], y[80:])
    save_head(head, tmp_path)
    return tmp_path


class Payload:
    """What an attacker writes: unpickling calls pathlib.Path.touch(marker)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_a_changed_head_file_is_refused_by_its_sha256(stored):
    f = stored / ESTIMATORS
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    with pytest.raises(PipelineError, match=r"estimators\.pkl: sha256 differs .* refusing to load it"):
        load_head(stored)


@pytest.mark.parametrize("payload", ["touch", "os.system"])
def test_a_code_running_head_file_is_refused_even_with_a_matching_sha256(stored, tmp_path_factory, payload):
    """The attacker also rewrites head.json: the unpickler still builds no type outside its allowlist."""
    import hashlib
    import os

    marker = tmp_path_factory.mktemp("m") / "ran"
    evil = Payload(marker) if payload == "touch" else type("P", (), {
        "__reduce__": lambda self: (os.system, (f"touch {marker}",))})()
    blob = pickle.dumps([{"mean": None, "std": None, "models": [evil], "calibrators": []}])
    (stored / ESTIMATORS).write_bytes(blob)
    meta = json.loads((stored / "head.json").read_text())
    meta["files"][ESTIMATORS] = hashlib.sha256(blob).hexdigest()
    (stored / "head.json").write_text(json.dumps(meta))
    with pytest.raises(PipelineError, match=r"estimators\.pkl: refused: .* is not an allowed type"):
        load_head(stored)
    assert not marker.exists()


def test_a_missing_or_foreign_head_is_a_clear_error(stored):
    (stored / "head.json").unlink()
    with pytest.raises(PipelineError, match=r"head\.json: not found \(run `dvc repro`\)"):
        load_head(stored)
