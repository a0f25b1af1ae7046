"""End to end on the other task kinds: real `dvc repro`, `dvc plots show` and predict on a generated 3-class
corpus with planted duplicates and on a regression target. Every declared plot exists, metric names are the
task's, and predictions carry score_<class> columns."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.params import TASK_METRICS
from tests.conftest import make_repo, predict_test_rows, sh, shrink_params

pytestmark = pytest.mark.slow
WORDS = "great awful plot acting boring superb dull moving funny slow tense warm cold bright".split()


def corpus(task: str, n: int = 150, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, 7)) for _ in range(n)]
    good = np.array([sum(w in ("great", "superb", "moving") for w in t.split()) for t in texts])
    label = good * 10.0 + rng.normal(size=n) if task == "regression" else np.array(["neg", "neu", "pos"])[
        np.clip(good, 0, 2)]
    df = pd.DataFrame({"review_id": [f"r{i}" for i in range(n)], "review": texts, "label": label})
    return pd.concat([df, df.iloc[:12].assign(review_id=lambda d: d["review_id"] + "-copy")])  # planted copies


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_other_tasks_end_to_end(tmp_path, tiny_model_dir, task):
    p = shrink_params(tiny_model_dir)
    p["data"] = {"source": "file", "path": "data/reviews.csv", "text_column": "review", "id_column": "review_id",
                 "label_column": "label", "task": task, "on_bad_rows": "drop", "min_class_rows": 2}
    repo = make_repo(tmp_path / "repo", p)
    corpus(task).to_csv(repo / "data/reviews.csv", index=False)
    sh(repo, "dvc", "repro")
    art = repo / "artifacts"
    report = json.loads((art / "data/report.json").read_text())
    assert report["duplicates"]["groups_with_copies"] >= 12
    metrics = json.loads((art / "evaluate/metrics.json").read_text())
    assert set(metrics["ensemble"]) == set(TASK_METRICS[task])
    primary = next(iter(TASK_METRICS[task]))
    assert metrics["ensemble_valid"]["metric"] == metrics["ensemble_vs_best"]["metric"] == primary
    for plot in ("models", "ensemble", "detail"):
        assert (art / f"evaluate/plots/{plot}.csv").exists()
    models = pd.read_csv(art / "evaluate/plots/models.csv")
    assert list(models.columns) == ["model", primary] and "ensemble" in set(models["model"])
    out = sh(repo, "dvc", "plots", "show", "-o", "shown")
    assert "failed to load" not in out, out
    html = (repo / "shown/index.html").read_text()
    fields = ("prediction", "target_range") if task == "regression" else ("predicted", "precision")
    assert all(f'"{f}"' in html for f in fields)

    test, pred, _ = predict_test_rows(repo, column="review")
    scores = ["score"] if task == "regression" else ["score_neg", "score_neu", "score_pos"]
    assert list(pred.columns) == [*scores, "prediction"] and len(pred) == len(test)


def test_onnx_embedding_backend_end_to_end(tmp_path, tiny_model_dir):
    """embed.backend: onnx through `dvc repro`: each embed stage exports its encoder into its artifact, and
    predict embeds new texts with that same file, reproducing the pipeline's predictions."""
    pytest.importorskip("onnxruntime")
    p = shrink_params(tiny_model_dir)
    p["embed"]["backend"] = "onnx"
    repo = make_repo(tmp_path / "repo", p)
    sh(repo, "dvc", "repro")
    art = repo / "artifacts"
    for src in ("minilm_ft", "minilm_pt"):
        assert (art / f"embeddings/{src}/encoder.onnx").exists()
        assert json.loads((art / f"embeddings/{src}/summary.json").read_text())["backend"] == "onnx"
    _, got, want = predict_test_rows(repo)
    assert np.abs(got["score_fresh"] - want["score_fresh"]).max() < 1e-4
