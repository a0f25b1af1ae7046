"""The embedding cache depends on inputs only, and is incremental: real `dvc repro` of the pretrained source's
embed (prepare, pretrained, embed) in a temporary git repo on a generated CSV with the tiny backbone.

A changed label and a new split seed rerun prepare, never the embed; appended rows are the only rows the
encoder sees, and the store equals a from-scratch embed of all rows; another backbone (a changed weights
fingerprint) embeds every row again.
"""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.cache.store import read_embeddings
from tests.conftest import make_repo, ran, sh, shrink_params

pytestmark = pytest.mark.slow
WORDS = "great awful plot acting boring superb dull moving funny slow tense warm cold bright".split()
STORE = "artifacts/embeddings/minilm_pt"


def corpus(n: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    texts = [" ".join(rng.choice(WORDS, 6 + i % 5)) + f" #{start + i}" for i in range(n)]
    return pd.DataFrame({"review_id": [f"r{start + i}" for i in range(n)], "review": texts,
                         "label": ["pos" if "great" in t or "superb" in t else "neg" for t in texts]})


def embed(repo, *args) -> tuple[set[str], dict, str]:
    out = sh(repo, "dvc", "repro", *args, "embed@minilm_pt")
    return ran(out), json.loads((repo / STORE / "summary.json").read_text()), out


def set_params(repo, fn) -> None:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    fn(p)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model_dir):
    p = shrink_params(tiny_model_dir)
    p["data"] = {"source": "file", "path": "data/reviews.csv", "text_column": "review", "id_column": "review_id",
                 "label_column": "label", "task": "binary"}  # no max_rows: the seed only draws the split
    repo = make_repo(tmp_path_factory.mktemp("incremental"), p)
    corpus(120).to_csv(repo / "data/reviews.csv", index=False)
    return repo


def test_first_run_embeds_every_row(repo):
    stages, summary, _ = embed(repo)
    assert stages == {"prepare", "pretrained@minilm", "embed@minilm_pt"}
    assert (summary["embedded"], summary["reused"]) == (120, 0)


def test_labels_and_the_split_seed_do_not_rerun_the_embed(repo):
    before = (repo / "dvc.lock").read_text()
    df = pd.read_csv(repo / "data/reviews.csv")
    df.loc[5, "label"] = "pos" if df.loc[5, "label"] == "neg" else "neg"
    df.to_csv(repo / "data/reviews.csv", index=False)
    set_params(repo, lambda p: p.update(seed=7))
    stages, _, _ = embed(repo)
    assert stages == {"prepare"}, stages
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["embed@minilm_pt"] == yaml.safe_load(before)["stages"]["embed@minilm_pt"]
    assert "up to date" in sh(repo, "dvc", "status", "embed@minilm_pt")


def test_appended_rows_are_the_only_rows_embedded_and_the_store_equals_a_full_pass(repo):
    before, _ = read_embeddings(repo / STORE)
    pd.concat([pd.read_csv(repo / "data/reviews.csv"), corpus(12, start=1000)]).to_csv(repo / "data/reviews.csv",
                                                                                       index=False)
    stages, summary, out = embed(repo)
    assert stages == {"prepare", "embed@minilm_pt"}
    assert (summary["embedded"], summary["reused"], summary["rows"]) == (12, 120, 132)
    assert "120 rows reused from the previous store, 12 embedded" in out
    X, index = read_embeddings(repo / STORE)
    inputs = pd.read_parquet(repo / "artifacts/inputs/inputs.parquet")
    assert index["id"].tolist() == inputs["id"].tolist() and index["id"].iloc[-1] == "r1011"
    # a from-scratch embed of the same inputs: the stage alone, with no previous store in place
    shutil.move(repo / STORE, repo / "incremental")
    sh(repo, sys.executable, "-m", "stages.embed", "minilm_pt")
    assert json.loads((repo / STORE / "summary.json").read_text())["embedded"] == 132
    Y, full_index = read_embeddings(repo / STORE)
    assert full_index.equals(index)
    assert np.array_equal(X[:120], before)  # reused rows: the previous store's, bit for bit
    # a full pass batches every row with other rows than the two incremental passes did: float32 summation order
    print("max |incremental - full pass|:", np.abs(X - Y).max())
    assert np.abs(X - Y).max() < 1e-5
    shutil.rmtree(repo / STORE)
    shutil.move(repo / "incremental", repo / STORE)
    assert "up to date" in sh(repo, "dvc", "status", "embed@minilm_pt")


def test_another_backbone_fingerprint_embeds_every_row_again(repo, tmp_path, tiny_model_dir):
    import torch
    from transformers import BertModel

    X, _ = read_embeddings(repo / STORE)
    other = tmp_path / "other-bert"  # the same architecture and tokenizer, other weights
    shutil.copytree(tiny_model_dir, other)
    torch.manual_seed(1)
    BertModel(BertModel.from_pretrained(tiny_model_dir).config).save_pretrained(other, safe_serialization=True)
    set_params(repo, lambda p: p["backbones"]["minilm"].update(name=str(other)))
    stages, summary, out = embed(repo)
    assert stages == {"pretrained@minilm", "embed@minilm_pt"}
    assert summary["embedded"] == summary["rows"] >= 120 and summary["reused"] == 0
    assert "made with another cache key (backbone differ)" in out, out[-2000:]
    assert not np.allclose(read_embeddings(repo / STORE)[0], X)
