"""The embedding cache: `<folder>/vectors.zarr` (N, D) float32/float16, chunked by rows, and
`<folder>/index.parquet` (id, label, split, row). Read back whole (`read_embeddings`) or several side by side
(`read_features`, the concatenated sources).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import PipelineError


def write_embeddings(folder: str | Path, X: np.ndarray, index: pd.DataFrame, dtype: str = "float32",
                     chunk_rows: int = 4096) -> None:
    import zarr  # here: modules that only read or write predictions do not need it (the GPU benchmark image)

    folder = Path(folder)
    arr = zarr.create_array(store=str(folder / "vectors.zarr"), shape=X.shape, dtype=dtype,
                            chunks=(min(chunk_rows, max(len(X), 1)), X.shape[1]), zarr_format=3)
    arr[:] = X.astype(dtype, copy=False)
    index = index[["id", "label", "split"]].reset_index(drop=True).copy()
    index["row"] = np.arange(len(index), dtype=np.int64)
    index.to_parquet(folder / "index.parquet", index=False)


def read_embeddings(folder: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """-> (X float32 (N, D), index frame). Raises PipelineError naming the folder if it is not a cache."""
    folder = Path(folder)
    if not (folder / "index.parquet").exists() or not (folder / "vectors.zarr").exists():
        raise PipelineError(f"{folder}: not an embedding cache (run the embed stage first)")
    import zarr

    X = zarr.open_array(str(folder / "vectors.zarr"), mode="r")[:].astype(np.float32)
    index = pd.read_parquet(folder / "index.parquet")
    if len(index) != len(X):
        raise PipelineError(f"{folder}: index has {len(index)} rows but vectors have {len(X)}")
    return X, index


def read_features(folders: list[str | Path]) -> tuple[np.ndarray, pd.DataFrame]:
    """Concatenate several caches column-wise; their ids must agree row for row."""
    parts = [read_embeddings(f) for f in folders]
    index = parts[0][1]
    for (_, idx), f in zip(parts[1:], folders[1:]):
        if not idx["id"].equals(index["id"]):
            raise PipelineError(f"{f}: rows do not match {folders[0]} (embed both from the same data)")
    return np.hstack([X for X, _ in parts]), index
