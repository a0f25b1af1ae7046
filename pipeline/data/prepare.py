"""The prepare stage, streamed: a source of any size -> dataset.parquet (labels and splits) and inputs.parquet
(what the encoders read), holding a batch of rows and per-row arrays, never the whole table (at 1M short
texts: 577 MB peak against 1098 MB for the whole-frame version, benchmarks/RESULTS.md "prepare streamed").

Pass 1 reads the source a batch at a time (`load.raw_batches`), checks each row (`load.bad_rows`), and
appends the usable ones, cleaned, to a temporary Parquet file. Per row it keeps only what the global steps
need: the id (an Arrow string: duplicate ids are found over every id once all are read), the 16-byte digest
of its duplicate key (`splits.dup_keys`), and its label's code (or its target). On those arrays follow, as
before: max_rows subsampling, duplicate groups, the task, the split and the target scale. Pass 2 reads the
temporary file back a row group at a time and writes both outputs in `load.BATCH`-row groups.
Row numbers in errors are 0-based positions in the source (after rotten_tomatoes' plot rows are dropped).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.inputs import FILE as INPUTS_FILE, input_column, inputs_frame
from pipeline.data import load
from pipeline.data.load import (DataError, bad_rows, clean_rows, declared_classes, first_rows, fit_target_scale,
                                label_parts, make_task, raw_batches)
from pipeline.data.splits import dedupe, dup_keys, label_key, split_rows
from pipeline.data.tasks import Task
from pipeline.params import DataParams

log = logging.getLogger(__name__)
FILES_SHOWN = ("missing_image_file", "unreadable_image")  # reasons whose error also names the first files


class GroupWriter:
    """Frames appended to one Parquet file in row groups of exactly `rows` rows (the last one shorter)."""

    def __init__(self, path: Path, rows: int, schema: pa.Schema | None = None):
        """`schema`: the columns' types; None: those of the first frame added."""
        self.path, self.rows, self.schema, self.parts, self.buffered, self.writer = path, rows, schema, [], 0, None

    def add(self, df: pd.DataFrame) -> None:
        if not len(df):
            return
        table = pa.Table.from_pandas(df, schema=self.schema, preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.parts.append(table.cast(self.writer.schema))
        self.buffered += len(df)
        while self.buffered >= self.rows:
            self._flush(self.rows)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self.parts)
        self.writer.write_table(table.slice(0, n), row_group_size=n)
        rest = table.slice(n)
        self.parts, self.buffered = ([rest] if len(rest) else []), len(rest)

    def close(self) -> None:
        """Write the last, shorter group. Without a single row added, no file is written."""
        if self.writer is None:
            return
        if self.buffered:
            self._flush(self.buffered)
        self.writer.close()
        self.writer = None


class _Scan:
    """Pass 1's per-row record and the bad-row tally (counts, first row numbers, first files per reason)."""

    def __init__(self, cfg: DataParams):
        self.cfg, self.rows = cfg, 0
        self.classes = declared_classes(cfg)
        self.images = bool(cfg.image_column) or cfg.source == "folder"
        col = "image" if self.images else "text"
        label = pa.float64() if cfg.task == "regression" else pa.string()
        # the temporary file's columns, typed up front: a batch whose ids are all missing is still strings
        self.schema = pa.schema([("id", pa.string()), (col, pa.string()), ("label", label)])
        self.counts: dict[str, int] = {}
        self.first: dict[str, list[int]] = {}
        self.files: dict[str, list[str]] = {}
        self.ids: list[pa.Array] = []  # every row's id, the bad ones' too (a later copy of a bad row's id repeats it)
        self.good: list[np.ndarray] = []  # positions of the rows written to the temporary file
        self.keys: list[np.ndarray] = []  # texts' duplicate keys (images: hashed once subsampled, in `prepare`)
        self.labels: list[np.ndarray] = []  # class codes in order of first appearance (names), or targets
        self.names: dict[str, int] = {}

    def batch(self, df: pd.DataFrame, out: GroupWriter) -> None:
        """Check one batch (rows self.rows, ...), record its rows, append its clean ones to `out`."""
        if not len(df):  # e.g. a chunk of rotten_tomatoes' plot rows only
            return
        cfg, col = self.cfg, input_column(df)
        parts = None if cfg.task == "regression" else label_parts(df["label"], cfg)
        masks = {k: m.to_numpy(bool) for k, m in bad_rows(df, cfg, self.classes, parts).items()}
        for k, m in masks.items():
            self.counts[k] = self.counts.get(k, 0) + int(m.sum())
            shown = self.first.setdefault(k, [])
            shown += [self.rows + i for i in first_rows(m, 5 - len(shown))]
            if k in FILES_SHOWN:
                files = self.files.setdefault(k, [])
                files += df[col].to_numpy()[first_rows(m, 3 - len(files))].tolist()
        ok = ~np.logical_or.reduce(list(masks.values()))
        self.ids.append(pa.array(df["id"].to_numpy(dtype=object), type=pa.string(), from_pandas=True))
        self.good.append(self.rows + np.flatnonzero(ok))
        self.rows += len(df)
        rows = clean_rows(df[ok], cfg, None if parts is None else parts[ok])
        if not self.images:
            self.keys.append(dup_keys(rows))
        if cfg.task == "regression":
            self.labels.append(rows["label"].to_numpy(np.float64))
        else:
            codes, uniques = pd.factorize(rows["label"])
            glob = np.array([self.names.setdefault(u, len(self.names)) for u in uniques], dtype=np.int32)
            self.labels.append(glob[codes] if len(codes) else np.zeros(0, np.int32))
        out.add(rows[["id", col, "label"]])

    def duplicate_ids(self) -> np.ndarray:
        """(rows,) bool: ids seen in an earlier row; counted and recorded like the batch reasons."""
        ids = pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array(self.ids, type=pa.string())))
        self.ids.clear()
        dup = ids.duplicated(keep="first").to_numpy()
        self.counts["duplicate_id"], self.first["duplicate_id"] = int(dup.sum()), first_rows(dup)
        return dup

    def refuse_or_warn(self, source: str, n_bad: int) -> None:
        bad = {k: v for k, v in self.counts.items() if v}
        if not bad:
            return
        if self.cfg.on_bad_rows == "error":
            msgs = [f"{k}: {n} rows (first: {self.first[k]}"
                    + (f", files {self.files[k]})" if k in FILES_SHOWN else ")") for k, n in bad.items()]
            raise DataError(f"{source}: bad rows: " + "; ".join(msgs) + " (set data.on_bad_rows: drop to drop them)")
        log.warning("dropping %d bad rows from %s: %s", n_bad, source, bad)

    def arrays(self, dup: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[str]]:
        """-> (positions in the temporary file of the rows to keep: clean, no repeated id; their duplicate
        keys (None for images); their labels: class codes, or targets; the class names, code -> name)."""
        def joined(parts: list, empty) -> np.ndarray:  # the batches' arrays, freed as they are joined
            out = np.concatenate(parts) if parts else empty
            parts.clear()
            return out

        sel = np.flatnonzero(~dup[joined(self.good, np.zeros(0, np.int64))])
        keys = None if self.images else joined(self.keys, np.zeros(0, "S16"))[sel]
        labels = joined(self.labels, np.zeros(0))[sel]
        if self.cfg.task == "regression":
            return sel, keys, labels, []
        return sel, keys, labels.astype(np.int32), sorted(self.names, key=self.names.get)  # first appearance


def prepare(cfg: DataParams, seed: int, data_out: Path, inputs_out: Path) -> tuple[Task, dict]:
    """Load, check, subsample (max_rows, stratified), handle duplicates, split by duplicate group ->
    `data_out`/dataset.parquet (id, text | image + image_sha, label, split) and `inputs_out`/inputs.parquet
    (pipeline/data/inputs.py). Returns (task, report); task.json and report.json are the caller's to write."""
    from sklearn.model_selection import train_test_split

    frames, source = raw_batches(cfg)
    scan, tmp = _Scan(cfg), data_out / "rows.tmp.parquet"
    rows_out = GroupWriter(tmp, load.BATCH, scan.schema)
    try:
        try:
            for df in frames:
                scan.batch(df, rows_out)
        finally:
            rows_out.close()
        dup = scan.duplicate_ids()
        sel, keys, labels, names = scan.arrays(dup)
        scan.refuse_or_warn(source, scan.rows - len(sel))
        # class names, not codes, where scikit-learn stratifies: the same split, and its errors name classes
        by_name = np.array(names, dtype=object)
        if cfg.max_rows and len(sel) > cfg.max_rows:
            strat = by_name[labels] if cfg.task in ("binary", "multiclass") else None
            try:
                keep, _ = train_test_split(np.arange(len(sel)), train_size=cfg.max_rows, random_state=seed,
                                           stratify=strat)
            except ValueError as e:
                raise DataError(f"data.max_rows={cfg.max_rows}: cannot subsample {len(sel)} rows: {e}") from None
            keep = np.sort(keep)
            sel, labels = sel[keep], labels[keep]
            keys = None if keys is None else keys[keep]
        shas = _image_shas(tmp, sel) if scan.images else None  # only the rows kept: hashing reads every byte
        if shas is not None:
            keys = dup_keys(pd.DataFrame({"image_sha": shas}))
        # labels comparable across copies: a multilabel set ignores the order of its parts; targets by their
        # bits (as by their text: -0.0 and 0.0 disagree)
        comparable = labels.astype(np.float64).view(np.int64) if cfg.task == "regression" else np.unique(
            [label_key(n, cfg.task, cfg.label_sep) for n in names], return_inverse=True)[1].ravel()[labels]
        keep, groups, dup_report = dedupe(keys, comparable, cfg)
        if keep is not None:
            sel, labels = sel[keep], labels[keep]
            shas = None if shas is None else shas[keep]
        task = make_task([names[c] for c in np.unique(labels)] if names else [], cfg)
        splits = split_rows(labels, cfg, task.kind, seed, groups, names)
        task = fit_target_scale(task, labels, splits)
        _write(tmp, sel, splits, shas, data_out / "dataset.parquet", inputs_out / INPUTS_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    report = {"source": source, "rows_in": scan.rows, "rows_out": int(len(sel)),
              "dropped": scan.counts, "duplicates": dup_report,
              "splits": pd.Series(splits).value_counts().to_dict()}
    log.info("prepared %d rows from %s (dropped %s); splits %s", len(sel), source,
             {k: v for k, v in scan.counts.items() if v}, report["splits"])
    return task, report


def _kept(tmp: Path, sel: np.ndarray, column: str | None = None):
    """The temporary file a row group at a time -> (its rows as a frame, or as one column's values; which of
    them `sel` (ascending positions) keeps; their positions in `sel`)."""
    if not tmp.exists():  # no clean row: an error came before this
        return
    f, start = pq.ParquetFile(tmp), 0
    for batch in f.iter_batches(load.BATCH, columns=[column] if column else None):
        lo, hi = np.searchsorted(sel, [start, start + batch.num_rows])
        mine = sel[lo:hi] - start
        start += batch.num_rows
        yield (batch.column(0).to_numpy(zero_copy_only=False) if column else batch.to_pandas()), mine, slice(lo, hi)


def _image_shas(tmp: Path, sel: np.ndarray) -> np.ndarray:
    """The content hash of each kept row's image (the duplicate key, and what DVC reacts to), in `sel`'s order."""
    from pipeline.data.images import file_sha

    parts = [np.array(file_sha(paths[mine].tolist()), dtype=object) for paths, mine, _ in _kept(tmp, sel, "image")]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=object)


def _write(tmp: Path, sel: np.ndarray, splits: np.ndarray, shas: np.ndarray | None, dataset: Path,
           inputs: Path) -> None:
    """Pass 2: the temporary file's rows `sel` (ascending positions), with their splits (and images' hashes),
    into both outputs."""
    data, inp = GroupWriter(dataset, load.BATCH), GroupWriter(inputs, load.BATCH)
    try:
        for df, mine, at in _kept(tmp, sel):
            df = df.iloc[mine].reset_index(drop=True)
            if shas is not None:
                df.insert(2, "image_sha", shas[at])
            df["split"] = splits[at]
            data.add(df)
            inp.add(inputs_frame(df))
    finally:
        data.close()
        inp.close()


def prepare_dataset(cfg: DataParams, seed: int) -> tuple[pd.DataFrame, Task, dict]:
    """What the prepare stage writes, as (frame: id, text | image + image_sha, label, split; task; report):
    `prepare` into a temporary folder, read back. For tests and benchmarks."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        task, report = prepare(cfg, seed, Path(tmp), Path(tmp))
        return pd.read_parquet(Path(tmp) / "dataset.parquet"), task, report
