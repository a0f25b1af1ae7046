"""The head stage fits one head on every feature set in one process, and reuses a fit from .cache/heads whose
inputs (head params, seed, backend, feature stores' vectors and index, labels, code) are the same and whose
files are intact. Real Zarr stores, a real prepared-data folder, real SVM fits; a 3-class task."""
import json

import numpy as np
import pandas as pd
import pytest

from pipeline.cache.store import write_embeddings
from pipeline.heads import reuse
from pipeline.heads.fit import run_heads
from pipeline.heads.store import load_head
from pipeline.io import write_json
from pipeline.params import Params
from pipeline.data.tasks import Task

TASK = Task("multiclass", classes=["neg", "neu", "pos"])
N = 240


def store(root, name, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(N) % 3
    X = (rng.normal(size=(N, 6)) + 2.0 * np.eye(3, 6)[y]).astype(np.float32)
    index = pd.DataFrame({"id": [f"r{i}" for i in range(N)], "input_hash": [f"h{i}" for i in range(N)]})
    write_embeddings(root / "artifacts/embeddings" / name, X, index, chunk_rows=64, shard_rows=128)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "artifacts/data"
    data.mkdir(parents=True)
    split = np.array(["train", "train", "valid", "test"])[np.arange(N) % 4]
    labels = np.asarray(TASK.classes)[np.arange(N) % 3]
    pd.DataFrame({"id": [f"r{i}" for i in range(N)], "text": "x", "label": labels, "split": split}).to_parquet(
        data / "dataset.parquet")
    write_json(data / "task.json", TASK.to_dict())
    store(tmp_path, "a_pt", 0)
    store(tmp_path, "b_ft", 1)
    return tmp_path


def params(C=1.0, seed=42, concat=("a_pt", "b_ft")) -> Params:
    return Params.model_validate({
        "seed": seed, "data": {"task": "multiclass", "source": "file", "path": "x.csv"},
        "backbones": {"bb": {"name": "x"}},
        "sources": {"a_pt": {"backbone": "bb", "from": "pretrained"}, "b_ft": {"backbone": "bb", "from": "finetune"}},
        "concat": {"ab": list(concat)},
        "heads": {"svm": {"kind": "svm", "C": C, "backend": "sklearn"}},
        "ensemble": {"members": ["a_pt-svm"]}})


def run(root, name, p) -> dict:
    out = root / name
    out.mkdir()
    run_heads(p, "svm", out)  # the cache: .cache/heads under the project root (the test's cwd)
    return json.loads((out / "summary.json").read_text())


def test_one_stage_fits_every_feature_set_and_reuses_only_what_did_not_change(project):
    first = run(project, "run1", params())
    assert first["fitted"] == ["a_pt", "b_ft", "ab"] and first["reused"] == []
    for f in ("a_pt", "b_ft", "ab"):
        assert (project / "run1" / f / "preds.parquet").is_file() and (project / "run1" / f / "params.yaml").is_file()

    again = run(project, "run2", params())
    assert again["reused"] == ["a_pt", "b_ft", "ab"] and again["fitted"] == []
    for f in ("a_pt", "b_ft", "ab"):  # the reused folders are the first fit, byte for byte
        for name in ("preds.parquet", "estimators.pkl", "report.json", "inputs.json"):
            assert (project / "run2" / f / name).read_bytes() == (project / "run1" / f / name).read_bytes()
    X = np.zeros((3, 6), dtype=np.float32)
    assert np.array_equal(load_head(project / "run2/a_pt").scores(X), load_head(project / "run1/a_pt").scores(X))

    store(project, "b_ft", 2)  # a new fine-tune: new vectors for b_ft only
    third = run(project, "run3", params())
    assert third["fitted"] == ["b_ft", "ab"] and third["reused"] == ["a_pt"]

    fourth = run(project, "run4", params(C=2.0))  # the head's params: every set
    assert fourth["fitted"] == ["a_pt", "b_ft", "ab"]
    assert run(project, "run5", params())["reused"] == ["a_pt", "b_ft", "ab"]  # back to C=1: all cached


def test_a_reordered_concat_and_a_new_seed_are_other_fits(project):
    run(project, "run1", params())
    flipped = run(project, "run2", params(concat=("b_ft", "a_pt")))  # other columns, other SVM
    assert flipped["fitted"] == ["ab"] and flipped["reused"] == ["a_pt", "b_ft"]
    assert run(project, "run3", params(seed=7))["reused"] == []  # the seed: the k-fold assignment


def test_what_does_not_shape_a_fit_does_not_refit(project):
    run(project, "run1", params())
    for src in ("a_pt", "b_ft"):  # an embed's timings and params record, with the same vectors
        (project / "artifacts/embeddings" / src / "summary.json").write_text('{"seconds": 1.0}')
        (project / "artifacts/embeddings" / src / "params.yaml").write_text("embed: {batch_size: 7}\n")
    (project / "artifacts/data/report.json").write_text("{}")
    assert run(project, "run2", params())["reused"] == ["a_pt", "b_ft", "ab"]


def test_a_changed_cached_file_is_refit_never_reused(project, caplog):
    run(project, "run1", params())
    key = json.loads((project / "run1/a_pt/inputs.json").read_text())["key"]
    pkl = project / ".cache/heads" / key / "estimators.pkl"
    pkl.write_bytes(pkl.read_bytes()[:-10])  # truncated
    again = run(project, "run2", params())
    assert again["fitted"] == ["a_pt"] and "files changed" in caplog.text
    (project / ".cache/heads" / key / "inputs.json").write_text("not json")
    assert run(project, "run3", params())["fitted"] == ["a_pt"]  # an unreadable record: a refit, no crash


def test_new_labels_or_new_code_refit_every_feature_set(project, monkeypatch):
    run(project, "run1", params())
    df = pd.read_parquet(project / "artifacts/data/dataset.parquet")
    df.loc[0, "label"] = "pos" if df.loc[0, "label"] != "pos" else "neg"
    df.to_parquet(project / "artifacts/data/dataset.parquet")
    assert run(project, "run2", params())["reused"] == []

    monkeypatch.setattr(reuse, "code_sha", lambda: "other code")
    assert run(project, "run3", params())["reused"] == []


def test_the_cache_keeps_the_most_recent_fits(project, monkeypatch):
    monkeypatch.setattr(reuse, "KEEP", 4)
    run(project, "run1", params())
    run(project, "run2", params(C=2.0))
    assert len([d for d in (project / ".cache/heads").iterdir() if d.is_dir()]) == 4


def test_the_stage_log_line_names_what_was_fit_and_reused(project):
    out = project / "run1"
    out.mkdir()
    line = run_heads(params(), "svm", out)
    assert line["fitted"] == "a_pt b_ft ab" and line["reused"] == "-" and line["fit_seconds"] > 0
