"""The embedding cache: `<folder>/vectors.zarr` (N, D) float32/float16, chunked by rows
and sharded (one file per `shard_rows` rows),
`<folder>/index.parquet` (id, row, input_hash) and `<folder>/key.json` (what every vector was computed with:
pipeline/cache/embed.py `cache_key`). Labels and splits are not in the cache: they come from artifacts/data,
joined by id (`read_features(folders, labels)`), so a new split or label does not touch the cache.
Read back whole (`read_embeddings`), several side by side (`read_features`, the concatenated sources), or
as the vectors a rerun may reuse (`reusable`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline import PipelineError
from pipeline.io import read_json, write_json

log = logging.getLogger(__name__)


def layout(n: int, shard_rows: int, chunk_rows: int) -> tuple[int, int]:
    """Rows per chunk and per shard of an N-row store: chunk_rows and shard_rows (a multiple of it, checked
    in params), both cut down to N for a small store (a shard holds a whole number of chunks)."""
    chunk = min(chunk_rows, max(n, 1))
    shard = min(shard_rows, -(-max(n, 1) // chunk) * chunk)
    return chunk, shard - shard % chunk


def create_vectors(path: str | Path, n: int, dim: int, dtype: str, shard_rows: int, chunk_rows: int):
    """A new (n, dim) Zarr v3 array at `path` (replacing one there): `chunk_rows`-row chunks, grouped into one
    file per `shard_rows` rows (`layout`), so 1M rows are 16 files at the defaults, not 245."""
    import zarr  # here: modules that only read or write predictions do not need it (the GPU benchmark image)

    chunk, shard = layout(n, shard_rows, chunk_rows)
    return zarr.create_array(store=str(path), shape=(n, dim), dtype=dtype, chunks=(chunk, dim),
                             shards=(shard, dim), zarr_format=3, overwrite=True)


def write_embeddings(folder: str | Path, X: np.ndarray, index: pd.DataFrame, dtype: str = "float32",
                     chunk_rows: int = 4096, key: dict | None = None, shard_rows: int = 65536) -> None:
    """X (N, D) -> vectors.zarr (stored as `dtype`, in the embed stage's sharded layout); index (N rows with id,
    input_hash) -> index.parquet with the row number; `key` (cache_key's dict) -> key.json. The embed stage
    streams shards instead (pipeline/cache/stream.py); this writes a store from a matrix already in memory."""
    folder = Path(folder)
    arr = create_vectors(folder / "vectors.zarr", len(X), X.shape[1], dtype, shard_rows, chunk_rows)
    arr[:] = X.astype(dtype, copy=False)
    write_index(folder, index, key)


def write_index(folder: str | Path, index, key: dict | None = None) -> None:
    """index (N rows with id, input_hash, in the store's row order: a pandas frame or a pyarrow Table) ->
    index.parquet with the row number; `key` -> key.json. Written through Arrow: no Python object per value."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def strings(col):  # pandas 3 writes its str columns as large_string: one type whatever came in
        return (col if isinstance(col, (pa.Array, pa.ChunkedArray)) else pa.array(col)).cast(pa.large_string())
    folder = Path(folder)
    n = index.num_rows if isinstance(index, pa.Table) else len(index)
    table = pa.table({"id": strings(index["id"]), "row": pa.array(np.arange(n, dtype=np.int64)),
                      "input_hash": strings(index["input_hash"])})
    pq.write_table(table, folder / "index.parquet")
    if key is not None:
        write_json(folder / "key.json", key)


def _opened(folder: str | Path):
    """-> (the store's Zarr array, opened read-only, not loaded; its index frame), or PipelineError naming the
    folder if it is not a cache or its index and vectors disagree."""
    folder = Path(folder)
    if not (folder / "index.parquet").exists() or not (folder / "vectors.zarr").exists():
        raise PipelineError(f"{folder}: not an embedding cache (run the embed stage first)")
    import zarr

    arr = zarr.open_array(str(folder / "vectors.zarr"), mode="r")
    index = pd.read_parquet(folder / "index.parquet")
    if len(index) != arr.shape[0]:
        raise PipelineError(f"{folder}: index has {len(index)} rows but vectors have {arr.shape[0]}")
    return arr, index


def _fill(out: np.ndarray, arr, col: int, rows: np.ndarray | None = None) -> None:
    """out[i, col:col + d] = arr[rows[i]] (rows: every row in order when None), read a shard at a time:
    besides `out`, memory holds one shard as stored (float16 or float32), never a second (N, d) matrix."""
    step, d = (getattr(arr, "shards", None) or arr.chunks)[0], arr.shape[1]
    if rows is None:
        for a in range(0, arr.shape[0], step):
            out[a:a + step, col:col + d] = arr[a:a + step]
        return
    pos = np.argsort(rows, kind="stable")  # out's rows by ascending store row: one pass over the shards
    wanted = rows[pos]
    for a in range(0, arr.shape[0], step):
        lo, hi = np.searchsorted(wanted, [a, a + step])
        if lo < hi:
            out[pos[lo:hi], col:col + d] = arr[a:a + step][wanted[lo:hi] - a]


def read_embeddings(folder: str | Path, dtype=np.float32) -> tuple[np.ndarray, pd.DataFrame]:
    """-> (X (N, D) as `dtype`, or as stored if None; index frame). Raises PipelineError naming the folder if
    it is not a cache."""
    arr, index = _opened(folder)
    X = np.empty(arr.shape, arr.dtype if dtype is None else dtype)
    _fill(X, arr, 0)
    return X, index


def join_labels(index: pd.DataFrame, labels: pd.DataFrame, where: str) -> pd.DataFrame:
    """The cache's index (id, row, ...) with label and split from `labels` (artifacts/data's dataset frame),
    joined by id, in the cache's row order. Both must hold the same ids: a head must not silently lose rows."""
    lab = labels.drop_duplicates("id")
    # one hash lookup of every cached id: `isin` + two `reindex` on Arrow strings took 0.14 s at 12.8k rows
    pos = pd.Index(lab["id"]).get_indexer(index["id"])
    missing = pos < 0
    extra = len(lab) - int((~missing).sum())
    if missing.any() or extra:
        raise PipelineError(f"{where}: {int(missing.sum())} cached rows have no label in artifacts/data and "
                            f"{extra} labelled rows are not cached (run `dvc repro`)")
    out = index.reset_index(drop=True).copy()
    out["label"] = lab["label"].to_numpy()[pos]
    out["split"] = lab["split"].to_numpy()[pos]
    return out


def read_features(folders: list[str | Path], labels: pd.DataFrame | None = None,
                  order: Callable[[pd.DataFrame], np.ndarray] | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Concatenate several caches column-wise into one float32 (N, sum of D) matrix, filled in place a shard
    at a time (`_fill`: no per-store matrix, no hstack copy); their ids must agree row for row. With `labels`
    (the dataset frame of artifacts/data), the index gets their label and split columns, joined by id.
    `order(index)` -> the store rows to read, in the order wanted (a subset, or the splits one after another,
    so that each split is a slice of X, not a copy); the index returned is in that order too."""
    parts = [_opened(f) for f in folders]
    index = parts[0][1]
    for (_, idx), f in zip(parts[1:], folders[1:]):
        if not idx["id"].equals(index["id"]):
            raise PipelineError(f"{f}: rows do not match {folders[0]} (embed both from the same data)")
    if labels is not None:
        index = join_labels(index, labels, str(folders[0]))
    rows = None if order is None else np.asarray(order(index), dtype=np.int64)
    if rows is not None:
        index = index.iloc[rows].reset_index(drop=True)
    X = np.empty((len(index), sum(arr.shape[1] for arr, _ in parts)), np.float32)
    col = 0
    for arr, _ in parts:
        _fill(X, arr, col, rows)
        col += arr.shape[1]
    return X, index


def reusable(folder: str | Path, key: dict) -> tuple[object, Callable] | None:
    """The vectors of a previous store in `folder` that a rerun may reuse: -> (the Zarr array, opened read-only,
    not loaded: `copy_rows` reads the rows a shard needs; `rows_of(input hashes)` -> float64 row of each in
    that store, NaN where it has none: the row at the same position where its hash is the same there, else the
    first row with that hash), or None (logged) when there is no store, or it was made with another
    key (a stale or foreign store is never reused: every row is embedded again). The lookup runs in Arrow
    (`pyarrow.compute.index_in`): no Python object per row, at 10M rows as at 10k."""
    folder = Path(folder)
    if not (folder / "key.json").is_file():
        if folder.exists():
            log.info("%s: no key.json (no store, or one from before content-addressed caching): embedding every "
                     "row", folder)
        return None
    old = read_json(folder / "key.json")
    if old.get("key") != key["key"]:
        differ = sorted(k for k in old.get("parts", {}).keys() | key["parts"].keys()
                        if old.get("parts", {}).get(k) != key["parts"].get(k))
        log.info("%s: made with another cache key (%s differ): embedding every row", folder, ", ".join(differ))
        return None
    try:
        import zarr

        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        X = zarr.open_array(str(folder / "vectors.zarr"), mode="r")
        index = pq.read_table(folder / "index.parquet", columns=["row", "input_hash"])
        if index.num_rows != X.shape[0]:
            raise PipelineError(f"index has {index.num_rows} rows for {X.shape[0]} vectors")
    except Exception as e:  # noqa: BLE001 - a broken previous store only costs a full embed
        log.warning("%s: cannot reuse the previous store (%s): embedding every row", folder, e)
        return None
    hashes = index["input_hash"].combine_chunks().cast(pa.large_string())
    stored = index["row"].to_numpy()
    in_order = np.array_equal(stored, np.arange(len(stored)))  # write_index's order: index row i is store row i
    by_row = hashes if in_order else hashes.take(pa.array(np.argsort(stored, kind="stable")))

    def rows_of(wanted) -> np.ndarray:
        wanted = wanted if isinstance(wanted, (pa.Array, pa.ChunkedArray)) else pa.array(wanted)
        wanted = wanted.cast(pa.large_string())
        # index_in: the position of each wanted hash's first occurrence in the old index, null where absent
        at = pc.index_in(wanted, value_set=hashes)
        pos = at.to_numpy(zero_copy_only=False)  # nulls -> NaN (float)
        out = np.full(len(pos), np.nan)
        ok = ~np.isnan(pos)
        out[ok] = stored[pos[ok].astype(np.int64)]
        # a row whose hash is the old store's at its own position keeps that row, not the first occurrence of a
        # duplicate text elsewhere: unmoved rows keep their own bits, and their shard can be the old file
        m = min(len(wanted), len(by_row))
        same = np.flatnonzero(pc.equal(wanted.slice(0, m), by_row.slice(0, m)).to_numpy(zero_copy_only=False))
        out[same] = same
        return out
    return X, rows_of


def copy_rows(X, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` (int, any order) of a Zarr array (or ndarray) -> ndarray (len(rows), D) as stored. Read in
    ascending order (each chunk is decoded once), then put back in the order asked for."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), X.shape[1]), dtype=X.dtype)
    if len(rows):
        out[order] = X.get_orthogonal_selection((rows[order], slice(None))) if hasattr(X, "oindex") \
            else X[rows[order]]
    return out
