"""The cache index holds no labels: heads join them from artifacts/data by id, in the cache's row order.
A previous store is reused only under the same cache key."""
import logging

import numpy as np
import pandas as pd
import pytest

from pipeline import PipelineError
from pipeline.cache.store import join_labels, read_embeddings, read_features, reusable, write_embeddings

KEY = {"key": "k1", "parts": {"pooling": "mean", "max_length": 32}}


def store(folder, n=6, key=KEY):
    X = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    index = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "input_hash": [f"h{i}" for i in range(n)]})
    write_embeddings(folder, X, index, key=key)
    return X, index


def test_labels_are_joined_by_id_in_the_cache_order(tmp_path):
    X, _ = store(tmp_path / "a")
    labels = pd.DataFrame({"id": [f"r{i}" for i in range(6)][::-1], "text": "t",
                           "label": list("abcdef"), "split": ["train"] * 3 + ["test"] * 3})
    F, index = read_features([tmp_path / "a"], labels)
    assert np.array_equal(F, X) and index["id"].tolist() == [f"r{i}" for i in range(6)]
    assert index["label"].tolist() == list("fedcba") and index["split"].tolist() == ["test"] * 3 + ["train"] * 3
    with pytest.raises(PipelineError, match="1 cached rows have no label"):
        join_labels(index, labels.iloc[1:], "x")
    with pytest.raises(PipelineError, match="1 labelled rows are not cached"):
        join_labels(index.iloc[1:], labels, "x")


def test_only_a_store_with_the_same_key_is_reused(tmp_path, caplog):
    X, _ = store(tmp_path / "a")
    got = reusable(tmp_path / "a", KEY)
    assert got is not None and np.array_equal(got[0][:], X)
    rows = got[1](["h4", "nope", "h0"])  # input hash -> row in the old store, NaN where it has none
    assert rows[0] == 4 and np.isnan(rows[1]) and rows[2] == 0
    other = {"key": "k2", "parts": {"pooling": "cls", "max_length": 32}}
    with caplog.at_level(logging.INFO):
        assert reusable(tmp_path / "a", other) is None
    assert "another cache key (pooling differ)" in caplog.text
    (tmp_path / "a/key.json").unlink()  # a store from before keys: never trusted
    assert reusable(tmp_path / "a", KEY) is None and reusable(tmp_path / "none", KEY) is None
    assert list(read_embeddings(tmp_path / "a")[1].columns) == ["id", "row", "input_hash"]


def test_a_duplicated_input_maps_to_its_first_row(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(3, 4)
    index = pd.DataFrame({"id": ["a", "b", "c"], "input_hash": ["h", "g", "h"]})  # a and c: the same text
    write_embeddings(tmp_path / "s", X, index, key=KEY)
    assert reusable(tmp_path / "s", KEY)[1](["h", "g"]).tolist() == [0.0, 1.0]


def test_features_are_read_a_shard_at_a_time_into_one_matrix(tmp_path, monkeypatch):
    """Two stores side by side (one float16) -> one float32 matrix equal to their hstack, and no read of a
    store returns more than one shard's rows: at 10M rows the head holds the matrix, not a copy per store."""
    import zarr

    rng = np.random.default_rng(0)
    n = 1000
    index = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "input_hash": [f"h{i}" for i in range(n)]})
    A, B = rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32)
    write_embeddings(tmp_path / "a", A, index, chunk_rows=64, shard_rows=128)
    write_embeddings(tmp_path / "b", B, index, dtype="float16", chunk_rows=64, shard_rows=128)
    reads, getitem = [], zarr.Array.__getitem__

    def spy(self, sel):
        out = getitem(self, sel)
        reads.append(len(out))
        return out
    monkeypatch.setattr(zarr.Array, "__getitem__", spy)
    F, idx = read_features([tmp_path / "a", tmp_path / "b"])
    assert F.dtype == np.float32 and np.array_equal(F, np.hstack([A, B.astype(np.float16).astype(np.float32)]))
    assert idx["id"].tolist() == index["id"].tolist()
    assert reads and max(reads) <= 128 and sum(reads) == 2 * n, reads
    rows = rng.permutation(n)[:300]  # a subset in any order (a head's splits one after another)
    reads.clear()
    G, gidx = read_features([tmp_path / "a", tmp_path / "b"], order=lambda index: rows)
    assert np.array_equal(G, F[rows]) and gidx["id"].tolist() == index["id"][rows].tolist()
    assert max(reads) <= 128
