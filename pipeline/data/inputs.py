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
    """inputs.parquet as the embed stage reads it, without the whole table in memory.

    `keys`: a pyarrow Table (id, input_hash) of every row, in order (Arrow strings: about 60 bytes a row, where
    a pandas frame's `.to_numpy()` makes a Python object per value); `column`: the model's input column (text
    or image); `n`: rows; `items(lo, hi)` -> the inputs of rows [lo, hi) as a pandas Series, decoded from the
    row groups that hold them (the last group is kept: the stage reads its shards in ascending order).
    """

    def __init__(self, folder: str | Path):
        import pyarrow.parquet as pq

        path = Path(folder) / FILE
        if not path.exists():
            raise PipelineError(f"{path}: not found (run the prepare stage first)")
        self.file = pq.ParquetFile(path)
        self.column = input_column(self.file.schema_arrow.names)
        self.keys = self.file.read(columns=["id", "input_hash"])
        self.n = self.keys.num_rows
        meta = self.file.metadata
        self.starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        self._last: tuple[int, object] | None = None

    def _group(self, g: int):
        if self._last is None or self._last[0] != g:
            self._last = (g, self.file.read_row_group(g, columns=[self.column]).column(0))
        return self._last[1]

    def items(self, lo: int, hi: int) -> pd.Series:
        import pyarrow as pa

        parts, g = [], int(np.searchsorted(self.starts, lo, side="right")) - 1
        while lo < hi and g < len(self.starts) - 1 and self.starts[g] < hi:
            a, b = max(lo, self.starts[g]) - self.starts[g], min(hi, self.starts[g + 1]) - self.starts[g]
            parts.append(self._group(g).slice(a, b - a))
            g += 1
        values = pa.chunked_array([c for p in parts for c in p.chunks], type=self.file.schema_arrow.field(
            self.column).type)
        return values.to_pandas().reset_index(drop=True)
