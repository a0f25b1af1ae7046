"""The inputs artifact, `artifacts/inputs/inputs.parquet`: what the encoders read, and nothing about labels.

prepare writes it beside `artifacts/data` (which keeps the labels and splits). The embed stage of a pretrained
source depends on this folder alone, so a new split (`data.valid_frac`, the split `seed`) or a changed label
leaves the pretrained embeddings cached. Columns: id, text (images: image, image_sha), input_hash.

`input_hash` is the content key of a row's vector in the embedding cache (pipeline/cache/embed.py): the
sha256 of the text's UTF-8 bytes (first 32 hex digits), or an image's content hash (`image_sha`).
No params record is written here: its content is its record, and a params file would change the folder's
hash with every `data.*` edit, which is exactly what must not rerun the embeddings.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import PipelineError

FILE = "inputs.parquet"


def input_column(df) -> str:
    """The model's input column of a prepared frame (or of a list of column names): image paths or texts."""
    return "image" if "image" in getattr(df, "columns", df) else "text"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def inputs_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A prepared frame (id, text | image + image_sha, label, split) -> the inputs frame, rows in its order."""
    if input_column(df) == "image":
        out = df[["id", "image", "image_sha"]].copy()
        out["input_hash"] = out["image_sha"].astype(str)
    else:
        out = df[["id", "text"]].copy()
        out["input_hash"] = [text_hash(t) for t in out["text"]]
    return out.reset_index(drop=True)


# rows per Parquet row group of inputs.parquet: the embed stage reads the model inputs one group at a time
ROW_GROUP = 65536


def write_inputs(folder: str | Path, df: pd.DataFrame) -> None:
    inputs_frame(df).to_parquet(Path(folder) / FILE, index=False, row_group_size=ROW_GROUP)


def read_inputs(folder: str | Path) -> pd.DataFrame:
    """-> the inputs frame written by prepare (id, text | image + image_sha, input_hash)."""
    path = Path(folder) / FILE
    if not path.exists():
        raise PipelineError(f"{path}: not found (run the prepare stage first)")
    return pd.read_parquet(path)


class InputRows:
    """inputs.parquet as the embed stage reads it, a row group at a time, never the whole table in memory.

    `n`: rows; `column`: the model's input column (text or image); `items(lo, hi)` -> the inputs of rows
    [lo, hi) as a pandas Series; `keys(lo, hi)` -> their (id, input_hash) as a pyarrow Table; `batches(columns)`
    -> every row group's columns in order. Each is decoded from the row groups that hold the rows (the last
    group read is kept per column set: the stage reads its shards in ascending order), so memory holds a group
    (65,536 rows), not N rows of ids and hashes (about 60 bytes a row as Arrow strings).
    """

    def __init__(self, folder: str | Path):
        import pyarrow.parquet as pq

        path = Path(folder) / FILE
        if not path.exists():
            raise PipelineError(f"{path}: not found (run the prepare stage first)")
        self.file = pq.ParquetFile(path)
        self.column = input_column(self.file.schema_arrow.names)
        meta = self.file.metadata
        self.n = meta.num_rows
        self.starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        self._last: dict[tuple[str, ...], tuple[int, object]] = {}

    def _group(self, g: int, columns: tuple[str, ...]):
        if columns not in self._last or self._last[columns][0] != g:
            self._last[columns] = (g, self.file.read_row_group(g, columns=list(columns)))
        return self._last[columns][1]

    def _rows(self, lo: int, hi: int, columns: tuple[str, ...]):
        import pyarrow as pa

        parts, g = [], int(np.searchsorted(self.starts, lo, side="right")) - 1
        while lo < hi and g < len(self.starts) - 1 and self.starts[g] < hi:
            a, b = max(lo, self.starts[g]) - self.starts[g], min(hi, self.starts[g + 1]) - self.starts[g]
            parts.append(self._group(g, columns).slice(a, b - a))
            g += 1
        schema = pa.schema([self.file.schema_arrow.field(c) for c in columns])
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def items(self, lo: int, hi: int) -> pd.Series:
        return self._rows(lo, hi, (self.column,)).column(0).to_pandas().reset_index(drop=True)

    def keys(self, lo: int = 0, hi: int | None = None, columns: tuple[str, ...] = ("id", "input_hash")):
        """`columns` (id, input_hash) of rows [lo, hi) (hi None: to the end) as a pyarrow Table."""
        return self._rows(lo, self.n if hi is None else hi, tuple(columns))

    def batches(self, columns=("id", "input_hash")):
        """Every row group's `columns` (pyarrow Tables), in row order."""
        for g in range(self.file.metadata.num_row_groups):
            yield self.file.read_row_group(g, columns=list(columns))
