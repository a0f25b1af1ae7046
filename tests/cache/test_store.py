"""The cache index holds no labels: heads join them from artifacts/data by id, in the cache's row order.
A previous store is reused only under the same cache key."""
import logging

import numpy as np
import pandas as pd
import pytest

from pipeline import PipelineError
from pipeline.cache.store import (HashRows, join_labels, read_embeddings, read_features, reusable,
                                  write_embeddings)

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


def first_rows(old: list[str], wanted: list[str], start: int) -> list[float]:
    """The reference: the row at the same position when its hash is the same there, else the first row with
    that hash, NaN for none."""
    first: dict[str, int] = {}
    for r, h in enumerate(old):
        first.setdefault(h, r)
    return [float(start + i) if start + i < len(old) and old[start + i] == h else float(first.get(h, np.nan))
            for i, h in enumerate(wanted)]


@pytest.mark.parametrize("kind", ["text", "image", "other", "mixed"])
def test_the_hash_lookup_finds_what_a_dict_of_first_rows_finds(tmp_path, monkeypatch, kind):
    """The previous store's lookup (HashRows: 128-bit keys, sorted) against a dict, for the prepare stage's
    hashes (32 hex digits for texts, 16 for images), with duplicates, rows moved, hashes that share their
    first 64 bits (one run of equal high bits to step through), hashes of another form (never found), strings
    that are not hex (sha256 keys), and a store whose later batches are not hex like its first."""
    from pipeline.cache import store as st

    monkeypatch.setattr(st, "INDEX_BATCH", 40)  # the index decoded in several batches
    rng = np.random.default_rng(0)
    width = {"text": 32, "image": 16}.get(kind, 32)
    pool = [rng.bytes(width // 2).hex() for _ in range(120)]
    if kind != "image":
        pool[:3] = ["0" * 16 + "a" * 16, "0" * 16 + "b" * 16, "0" * 16 + "c" * 16]  # equal high 64 bits
    if kind == "other":
        pool = [f"h{i}" for i in range(120)]
    old = [pool[i] for i in rng.integers(0, 100, 150)] + pool[:3] + [pool[0]] * 4  # duplicates, a long run
    if kind == "mixed":
        old[-20:] = [f"not hex {i}" for i in range(20)]
    X = np.arange(len(old), dtype=np.float32)[:, None]
    write_embeddings(tmp_path / "s", X, pd.DataFrame({"id": [f"r{i}" for i in range(len(old))],
                                                      "input_hash": old}), key=KEY)
    rows_of = reusable(tmp_path / "s", KEY)[1]
    moved = list(old)
    rng.shuffle(moved[:60])
    wanted = moved + pool[100:] + ["zz", "0" * 16 + "d" * 16, pool[2], pool[1], "ab" * 4, "", pool[0][:-1]]
    for start, stop in [(0, len(wanted)), (0, 40), (37, 120), (150, len(wanted)), (len(wanted), len(wanted))]:
        got = rows_of(wanted[start:stop], start)
        assert np.array_equal(got, first_rows(old, wanted[start:stop], start), equal_nan=True), (kind, start)


def test_an_index_written_a_row_group_at_a_time_numbers_its_rows_through(tmp_path):
    """The embed stage writes index.parquet from inputs.parquet's row groups, one after another: its rows are
    numbered through (not from 0 in each group), one Parquet row group per part, and a rerun finds them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.cache.store import write_index

    t = pa.table({"id": [f"r{i}" for i in range(12)], "input_hash": [f"{i:032x}" for i in range(12)]})
    (tmp_path / "s").mkdir()
    write_index(tmp_path / "s", iter([t.slice(0, 5), t.slice(5, 0), t.slice(5)]))
    f = pq.ParquetFile(tmp_path / "s/index.parquet")
    got = f.read()
    assert got["row"].to_pylist() == list(range(12)) and got["input_hash"].to_pylist() == t["input_hash"].to_pylist()
    assert f.metadata.num_row_groups == 3 and got.schema.field("id").type == pa.large_string()
    rows = HashRows.of_index(tmp_path / "s/index.parquet").rows_of([f"{i:032x}" for i in (11, 0, 5)])
    assert rows.tolist() == [11.0, 0.0, 5.0]


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
