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
    """index (id, input_hash of every row, in the store's row order: a pandas frame, a pyarrow Table, or an
    iterable of Tables, one after another, which the embed stage passes a row group at a time) ->
    index.parquet with the row number, one Parquet row group per Table; `key` -> key.json. Written through
    Arrow: no Python object per value, and with batches no more than one batch in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def strings(col):  # pandas 3 writes its str columns as large_string: one type whatever came in
        return (col if isinstance(col, (pa.Array, pa.ChunkedArray)) else pa.array(col)).cast(pa.large_string())
    folder = Path(folder)
    schema = pa.schema([("id", pa.large_string()), ("row", pa.int64()), ("input_hash", pa.large_string())])
    start = 0
    with pq.ParquetWriter(folder / "index.parquet", schema) as w:
        for part in [index] if isinstance(index, (pa.Table, pd.DataFrame)) else index:
            n = part.num_rows if isinstance(part, pa.Table) else len(part)
            w.write_table(pa.table({"id": strings(part["id"]), "row": pa.array(np.arange(start, start + n,
                                    dtype=np.int64)), "input_hash": strings(part["input_hash"])}, schema=schema))
            start += n
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
    not loaded: `copy_rows` reads the rows a shard needs; `rows_of(input hashes, start)` -> float64 row of each
    in that store, NaN where it has none: the row at the same position (`start` + i) where its hash is the same
    there, else the first row with that hash; `HashRows`), or None (logged) when there is no store, or it was
    made with another key (a stale or foreign store is never reused: every row is embedded again)."""
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

        X = zarr.open_array(str(folder / "vectors.zarr"), mode="r")
        lookup = HashRows.of_index(folder / "index.parquet")
        if lookup.n != X.shape[0]:
            raise PipelineError(f"index has {lookup.n} rows for {X.shape[0]} vectors")
    except Exception as e:  # noqa: BLE001 - a broken previous store only costs a full embed
        log.warning("%s: cannot reuse the previous store (%s): embedding every row", folder, e)
        return None
    return X, lookup.rows_of


def _strings(values):
    import pyarrow as pa

    values = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.large_string())
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values.cast(pa.large_binary())


INDEX_BATCH = 65536  # rows of index.parquet decoded at a time by HashRows.of_index
_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def value_offsets(values) -> np.ndarray:
    """An Arrow large_string/large_binary array (a slice too) -> its len + 1 int64 offsets into its data buffer
    (`buffers()[2]`): value i is bytes off[i]:off[i + 1] there, with no Python object per value."""
    return np.frombuffer(values.buffers()[1], np.int64)[values.offset:values.offset + len(values) + 1]


def _hex_width(values) -> int:
    """The length L when every value (Arrow large_binary) is L bytes long, 0 < L <= 32, else 0 (whether they are
    hex digits is `_keys128`'s check)."""
    lens = np.diff(value_offsets(values))
    if not len(values) or values.null_count or lens[0] < 1 or lens[0] > 32 or (lens != lens[0]).any():
        return 0
    return int(lens[0])


def _keys128(values, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input hashes (Arrow large_binary) -> (hi, lo) uint64 and a mask of the values that have a key: with
    `width` L > 0, the hex digits of each L-digit lowercase hex value, left-aligned in 128 bits (exact: the
    prepare stage's hashes are 32 hex digits for texts, 16 for images), other values none; with 0, the first 128
    bits of each value's sha256 (any strings: one Python call per value)."""
    n = len(values)
    hi, lo, ok = np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.zeros(n, bool)
    if not n:
        return hi, lo, ok
    if not width:
        import hashlib

        d = np.frombuffer(b"".join(hashlib.sha256(v or b"").digest()[:16] for v in values.to_pylist()),
                          ">u8").reshape(n, 2)
        return d[:, 0].astype(np.uint64), d[:, 1].astype(np.uint64), np.ones(n, bool)
    off = value_offsets(values)
    lens = np.diff(off)
    ok = lens == width
    data = np.frombuffer(values.buffers()[2], np.uint8) if values.buffers()[2] else np.zeros(0, np.uint8)
    if ok.all():  # the prepare stage's hashes: one row of `width` bytes each, a view of Arrow's buffer
        digits = _HEX[data[off[0]:off[-1]].reshape(n, width)]
    else:
        digits = _HEX[data[off[:-1][ok][:, None] + np.arange(width)]]
    good = (digits < 16).all(1)
    ok[np.flatnonzero(ok)[~good]] = False
    full = np.zeros((int(good.sum()), 32), np.uint8)
    full[:, :width] = digits[good]
    packed = np.ascontiguousarray((full[:, 0::2] << 4) | full[:, 1::2]).view(">u8")  # (rows, 2) big-endian
    hi[ok], lo[ok] = packed[:, 0], packed[:, 1]
    return hi, lo, ok


class HashRows:
    """A store's input hashes -> its rows, in memory as 128-bit keys sorted (16 bytes a row) with the row of each
    and each row's place among them (4 bytes each below 2**31 rows): about 24 bytes a row once built (about 53
    while it is built: the unsorted keys and the sort's order beside the sorted ones), where the store's hashes
    as Arrow strings with an Arrow hash table over them took about 170 (10M rows: 240 MB, not 1.7 GB), and no
    Python object per row. Built from index.parquet a batch at a time (`of_index`). Sorted by the high 64 bits
    alone: distinct hashes that share them (never seen for the prepare stage's sha256-derived ones) are walked
    one entry at a time in `rows_of`."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray, width: int):
        self.n, self.width = len(hi), width
        # by hi, then by row (stable): equal hashes keep the first row first; equal hi with another lo (never
        # seen with 128-bit hashes) is stepped over in rows_of
        order = np.argsort(hi, kind="stable")
        itype = np.int32 if self.n < 2 ** 31 else np.int64
        self.hi, self.lo, self.row = hi[order], lo[order], order.astype(itype)
        self.place = np.empty(self.n, itype)
        self.place[order] = np.arange(self.n, dtype=itype)

    @classmethod
    def of_index(cls, path: Path) -> "HashRows":
        """index.parquet (row, input_hash) -> its lookup, read INDEX_BATCH rows at a time. The first batch
        decides the keys: the hashes' hex digits when they are all hex of one length, else sha256 (read again
        from the start in that mode if a later batch's hashes are not of the first's form)."""
        import pyarrow.parquet as pq

        f = pq.ParquetFile(path)
        n = f.metadata.num_rows
        width = None
        for _attempt in range(2):
            hi, lo, seen = np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.zeros(n, bool)
            for b in f.iter_batches(batch_size=INDEX_BATCH, columns=["row", "input_hash"]):
                v, r = _strings(b.column(1)), b.column(0).to_numpy()
                width = _hex_width(v) if width is None else width
                if len(r) and (r.min() < 0 or r.max() >= n):
                    raise PipelineError(f"{path}: a row number outside 0..{n - 1}")
                hi[r], lo[r], ok = _keys128(v, width)
                if not ok.all():  # not all hex of the first batch's length: sha256 keys for every value
                    width = 0
                    break
                seen[r] = True
            else:
                if not seen.all():
                    raise PipelineError(f"{path}: {int((~seen).sum())} store rows have no index entry")
                return cls(hi, lo, width or 0)
        raise AssertionError("unreachable: the second pass hashes every value")

    def rows_of(self, wanted, start: int = 0) -> np.ndarray:
        """Input hashes of the rows at positions start, start + 1, ... -> float64 store row of each, NaN where
        the store has none: the row at the same position when its hash is the same there (unmoved rows keep
        their own bits, and their shard can be the old file), else the first row with that hash."""
        hi, lo, ok = _keys128(_strings(wanted), self.width)
        out = np.full(len(hi), np.nan)
        at = np.arange(start, min(start + len(hi), self.n))  # first the same position: most rows of a rerun
        if len(at):
            m, p = len(at), self.place[at]
            same = ok[:m] & (self.hi[p] == hi[:m]) & (self.lo[p] == lo[:m])
            out[:m][same] = at[same]
        todo = np.flatnonzero(ok & np.isnan(out))
        pos = np.searchsorted(self.hi, hi[todo])
        while len(todo):  # a run of equal hi: its first entry, unless only its lo differs (then the next)
            inside = pos < self.n
            todo, pos = todo[inside], pos[inside]
            same_hi = self.hi[pos] == hi[todo]
            todo, pos = todo[same_hi], pos[same_hi]
            hit = self.lo[pos] == lo[todo]
            out[todo[hit]] = self.row[pos[hit]]
            todo, pos = todo[~hit], pos[~hit] + 1
        return out


def copy_rows(X, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` (int, any order) of a Zarr array (or ndarray) -> ndarray (len(rows), D) as stored. Read in
    ascending order (each chunk is decoded once), then put back in the order asked for."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), X.shape[1]), dtype=X.dtype)
    if len(rows):
        out[order] = X.get_orthogonal_selection((rows[order], slice(None))) if hasattr(X, "oindex") \
            else X[rows[order]]
    return out
