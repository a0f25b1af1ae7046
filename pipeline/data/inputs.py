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

import pandas as pd

from pipeline import PipelineError

FILE = "inputs.parquet"


def input_column(df: pd.DataFrame) -> str:
    """The model's input column of a prepared frame: image paths or texts."""
    return "image" if "image" in df.columns else "text"


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


def write_inputs(folder: str | Path, df: pd.DataFrame) -> None:
    inputs_frame(df).to_parquet(Path(folder) / FILE, index=False)


def read_inputs(folder: str | Path) -> pd.DataFrame:
    """-> the inputs frame written by prepare (id, text | image + image_sha, input_hash)."""
    path = Path(folder) / FILE
    if not path.exists():
        raise PipelineError(f"{path}: not found (run the prepare stage first)")
    return pd.read_parquet(path)
