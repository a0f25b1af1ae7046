"""Streaming, sharded, resumable writing of a store's `vectors.zarr` (the embed stage's writer).

Rows are cut into shards of `shard_rows` in input order. Each shard is computed on its own (its reused rows
copied from the previous store, its other rows embedded in length-sorted batches of that shard alone) and
written at once as one Zarr v3 shard file holding `chunk_rows`-row chunks: no (N, D) matrix is ever in memory,
and 1M rows at the default 65,536 rows a shard are 16 shard files, not 245 chunk files (DVC hashes every
file of an output, and slows down badly on many small ones).

Resume: the store grows in a partial folder under artifacts/.tmp named by `partial_name` (the cache key,
the input hashes in order and the shard layout), with `progress.json` listing the shards written in full.
A killed embed leaves it; the rerun with the same key and inputs skips those shards and writes the rest,
and because a shard's result depends on that shard's rows alone, the finished store equals an uninterrupted
one bit for bit. A partial under another name (other inputs, key or layout) is deleted, never reused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from pipeline.cache.store import create_vectors, layout
from pipeline.io import read_json, tmp_root

log = logging.getLogger(__name__)
PROGRESS = "progress.json"


def partial_name(final: Path, key: str, input_hashes, shard: int, chunk: int, dtype: str) -> str:
    """`<final's path, flattened>.partial-<sha256 of key, inputs in order, layout>` (first 16 hex digits)."""
    h = hashlib.sha256(f"{key}|{shard}|{chunk}|{dtype}|".encode())
    for x in input_hashes:
        h.update(str(x).encode() + b"\n")
    return f"{'__'.join(Path(final).parts)}.partial-{h.hexdigest()[:16]}"


class ShardWriter:
    """Writes an (n, D) store shard by shard into `folder`/vectors.zarr, resuming a killed run's shards.

    `folder`: the partial folder (artifacts/.tmp/<partial_name>); D is set by the first shard written.
    `pending()` -> the shard numbers still to write; `rows(s)` -> (lo, hi); `write(s, block (hi-lo, D))`;
    `finish(out)` moves vectors.zarr into `out` and deletes the partial folder.
    """

    def __init__(self, folder: str | Path, n: int, dtype: str, shard_rows: int, chunk_rows: int):
        self.folder, self.n, self.dtype = Path(folder), n, dtype
        self.chunk, self.shard = layout(n, shard_rows, chunk_rows)
        self.n_shards = -(-n // self.shard) if n else 0
        self._drop_stale_partials()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.done: set[int] = set(read_json(self.folder / PROGRESS)["done"]) \
            if (self.folder / PROGRESS).is_file() else set()
        self.arr = self._open() if self.done else None
        if self.done:
            first = min(self.pending(), default=self.n_shards)
            log.info("resuming %s from shard %d of %d (%d shards already written by a killed run)",
                     self.folder.name, first, self.n_shards, len(self.done))

    def _drop_stale_partials(self) -> None:
        stem = self.folder.name.rsplit(".partial-", 1)[0]
        for old in self.folder.parent.glob(f"{stem}.partial-*"):
            if old != self.folder:
                log.info("deleting %s: a partial store for other inputs, cache key or layout", old)
                shutil.rmtree(old, ignore_errors=True)

    def _open(self):
        import zarr

        return zarr.open_array(str(self.folder / "vectors.zarr"), mode="r+")

    def _create(self, dim: int):
        return create_vectors(self.folder / "vectors.zarr", self.n, dim, self.dtype, self.shard, self.chunk)

    def pending(self) -> list[int]:
        return [s for s in range(self.n_shards) if s not in self.done]

    def rows(self, s: int) -> tuple[int, int]:
        return s * self.shard, min((s + 1) * self.shard, self.n)

    def write(self, s: int, block: np.ndarray) -> None:
        """Store shard `s` (its rows' vectors, (hi - lo, D)) and only then record it as done."""
        lo, hi = self.rows(s)
        if self.arr is None:
            self.arr = self._create(block.shape[1])
        self.arr[lo:hi] = block.astype(self.dtype, copy=False)
        self._mark_done(s)

    def _mark_done(self, s: int) -> None:
        self.done.add(s)
        tmp = self.folder / (PROGRESS + ".tmp")
        tmp.write_text(json.dumps({"done": sorted(self.done), "shard_rows": self.shard, "rows": self.n}))
        os.replace(tmp, self.folder / PROGRESS)  # atomic: a kill leaves the old list or the new one

    def finish(self, out: str | Path, dim: int) -> None:
        """Move the finished vectors.zarr into `out` (an empty store of `dim` columns when n is 0)."""
        if self.arr is None:
            self.arr = self._create(dim)
        shutil.move(str(self.folder / "vectors.zarr"), str(Path(out) / "vectors.zarr"))
        shutil.rmtree(self.folder, ignore_errors=True)


def partial_folder(final: Path, key: str, input_hashes, shard_rows: int, chunk_rows: int, dtype: str) -> Path:
    """Where the store for `final` (artifacts/embeddings/<source>) grows: artifacts/.tmp/<partial_name>."""
    chunk, shard = layout(len(input_hashes), shard_rows, chunk_rows)
    return tmp_root(Path(final)) / partial_name(final, key, input_hashes, shard, chunk, dtype)
