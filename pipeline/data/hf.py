"""`data.source: hf`: rows from Hugging Face `datasets`, offline, into the same columns a table file gives.

In: `data.path` and `data.hf_builder`:
- `hf_builder: null` (default): `path` is a folder written by `Dataset.save_to_disk` or
  `DatasetDict.save_to_disk`, read with `datasets.load_from_disk` (memory-mapped Arrow);
- `hf_builder: csv | json | parquet | text | imagefolder`: `load_dataset(builder, data_files=path)` for a file
  or a glob, or `data_dir=path` for a folder (imagefolder: `<path>/<class>/<image>`, or a metadata file).
`data.hf_split` picks one split of a DatasetDict (e.g. `train`); by default every split is read, one after the
other, because the pipeline draws its own train/valid/test split (grouped by duplicate inputs).
Out: pandas frames of the dataset's columns, a batch at a time, where ClassLabel values become their names (a
sequence of them, for multilabel, is joined with `data.label_sep`) and Image columns become file paths, and
the folder that relative image paths start from. The caller (`load.raw_batches`) then checks and renames the
columns as for a CSV file. `datasets` is optional (`pip install -e ".[hf]"`); a clear error names it.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator

import pandas as pd

from pipeline import PipelineError
from pipeline.params import DataParams


def _datasets():
    try:
        import datasets
    except ImportError:
        raise PipelineError('data.source hf needs the datasets package: pip install -e ".[hf]"') from None
    datasets.disable_progress_bars()
    return datasets


def _open(ds, path: Path, cfg: DataParams):
    """-> one Dataset (the chosen split, or every split concatenated)."""
    datasets = _datasets()
    if not isinstance(ds, datasets.DatasetDict):
        if cfg.hf_split:
            raise PipelineError(f"{path}: data.hf_split {cfg.hf_split!r} given, but this is a single Dataset "
                                "without splits")
        return ds
    if cfg.hf_split:
        if cfg.hf_split not in ds:
            raise PipelineError(f"{path}: no split {cfg.hf_split!r}; splits are {list(ds)}")
        return ds[cfg.hf_split]
    try:
        return datasets.concatenate_datasets([ds[s] for s in ds])
    except ValueError as e:  # splits with other columns or label names
        raise PipelineError(f"{path}: its splits {list(ds)} cannot be read as one table ({e}); pick one with "
                            "data.hf_split") from None


def _load(path: Path, cfg: DataParams):
    datasets = _datasets()
    if cfg.hf_builder is None:
        if not path.is_dir():
            raise PipelineError(f"{path}: not a folder written by save_to_disk (for files, set data.hf_builder: "
                                "csv, json, parquet, text or imagefolder)")
        try:
            return datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:
            raise PipelineError(f"{path}: not a dataset saved with save_to_disk ({e})") from None
    where = {"data_dir": str(path)} if path.is_dir() else {"data_files": str(path)}
    if not path.exists() and not glob.glob(str(path)):
        raise PipelineError(f"{path}: no such file (data.path, data.hf_builder {cfg.hf_builder})")
    try:
        return datasets.load_dataset(cfg.hf_builder, **where)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetGenerationError) as e:
        raise PipelineError(f"{path}: datasets could not read it as {cfg.hf_builder} ({e})") from None


def hf_batches(cfg: DataParams, rows: int) -> tuple[Iterator[pd.DataFrame], Path]:
    """-> (frames of the dataset's columns, `rows` at a time (index: the row's position), with labels as
    names and images as paths; the folder relative image paths start from). The dataset stays memory-mapped
    Arrow; only a batch at a time becomes pandas."""
    datasets = _datasets()
    path = Path(cfg.path)
    ds = _open(_load(path, cfg), path, cfg)
    images = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
    for c in images:  # paths, not decoded pixels: the pipeline hashes and reads image files itself
        ds = ds.cast_column(c, datasets.Image(decode=False))
    if path.is_dir():
        root = path
    else:
        matches = [Path(m).parent.resolve() for m in glob.glob(str(path))] or [path.parent]
        root = Path(os.path.commonpath(matches))  # a glob's folder part is a pattern, not a folder
    return (_named(ds, images, path, cfg, start, rows) for start in range(0, len(ds), rows)), root


def _named(ds, images: list[str], path: Path, cfg: DataParams, start: int, rows: int) -> pd.DataFrame:
    """Rows [start, start + rows) of `ds` as pandas, ClassLabel ids as names, Image values as file paths."""
    datasets = _datasets()
    df = ds.select(range(start, min(start + rows, len(ds)))).to_pandas()
    df.index = pd.RangeIndex(start, start + len(df))
    for c, f in ds.features.items():
        if isinstance(f, datasets.ClassLabel):
            # -1 and null are ClassLabel's "no label": missing labels, bad rows for the checks that follow
            df[c] = [None if pd.isna(v) or v < 0 else f.int2str(int(v)) for v in df[c]]
        elif isinstance(f, (datasets.Sequence, datasets.List)) and isinstance(f.feature, datasets.ClassLabel):
            df[c] = [None if v is None else cfg.label_sep.join(f.feature.int2str(int(i)) for i in v if i >= 0)
                     for v in df[c]]
    for c in images:
        def as_path(v, c=c):
            if v is None:
                return None  # a missing image: a bad row for the checks that follow
            # save_to_disk embeds the bytes and keeps only the file's name: no file to hash and read
            if v.get("bytes") is not None or v.get("path") is None:
                raise PipelineError(f"{path}: column {c!r} holds image bytes, not image files (save_to_disk "
                                    "embeds them); point data.path at the image folder with hf_builder: "
                                    "imagefolder instead")
            return v["path"]
        df[c] = df[c].map(as_path)
    return df
