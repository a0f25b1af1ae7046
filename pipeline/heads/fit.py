"""The head stage: fit one head on every feature set of params.yaml (each source, each concat of sources) and
write, per feature set, its predictions, the stored head and a report. Single heads come from
`estimators.fit_head`, k-fold ones from `folds.fit_folded`; this module is their only caller in the pipeline.

One process per head, not per (features, head): changing a head's C pays one interpreter start and one
scikit-learn import (about 1.7 s with sklearnex) for all its feature sets. The granularity DVC had per pair
comes back by content (pipeline/heads/reuse.py): a feature set whose fit's inputs (the head's params, the
seed, the feature stores' vectors and index, the labels, the code, the backend) are those of a fit in
`.cache/heads/` gets a copy of that fit instead of a new one. So a new fine-tune refits the heads on the
fine-tuned features, not on the pretrained ones, and a new source fits only that source.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.cache.store import read_features
from pipeline.data.load import LABELS, read_prepared
from pipeline.data.tasks import Task
from pipeline.heads.estimators import fit_head
from pipeline.heads import reuse
from pipeline.heads.folds import fit_folded
from pipeline.heads.store import save_head
from pipeline.io import write_json, write_params
from pipeline.params import Params
from pipeline.preds import write_preds

log = logging.getLogger(__name__)


def feature_folders(params: Params, features: str) -> list[Path]:
    parts = params.concat.get(features, [features])
    return [paths.embeddings(p) for p in parts]


def feature_sets(params: Params) -> list[str]:
    """Every feature set a head is fit on: each source, then each concat."""
    return list(params.sources) + list(params.concat)


def run_heads(params: Params, head_name: str, out: Path, data_dir: Path = paths.DATA,
              cache: Path = paths.HEAD_CACHE) -> dict:
    """Fit head `head_name` on every feature set -> `out`/<features>/ (what `run_head` writes, plus inputs.json:
    the fit's key and its files' sha256), copying a feature set's fit from `cache` where one has the same key
    (pipeline/heads/reuse.py). Writes `out`/summary.json ({"fitted": [...], "reused": [...], "seconds":
    {features: fit s}}); returns its one-line form for the stage's log."""
    labels, task = read_prepared(data_dir, LABELS)
    code = reuse.code_sha()
    summary: dict = {"fitted": [], "reused": [], "seconds": {}}
    memo: dict[Path, dict] = {}
    for features in feature_sets(params):
        key = reuse.fingerprint(params, features, head_name, data_dir, code, memo)
        dst = out / features
        if reuse.restore(key, dst, cache):
            summary["reused"].append(features)
            log.info("head %s on %s: the fit of the same inputs copied from %s", head_name, features, cache / key)
            continue
        dst.mkdir(parents=True)
        report = run_head(params, features, head_name, dst, data_dir, prepared=(labels, task))
        reuse.put(key, dst, cache)
        summary["fitted"].append(features)
        summary["seconds"][features] = round(report["fit_seconds"], 3)
    write_json(out / "summary.json", summary)
    return {"fitted": " ".join(summary["fitted"]) or "-", "reused": " ".join(summary["reused"]) or "-",
            "fit_seconds": sum(summary["seconds"].values())}


def run_head(params: Params, features: str, head_name: str, out: Path, data_dir: Path = paths.DATA,
             prepared: tuple[pd.DataFrame, Task] | None = None) -> dict:
    """Fit a head on cached features (a source or a concat of sources) -> preds.parquet, the head
    (pipeline/heads/store.py: head.json, estimators.pkl), report.json. Without folds: fit on train, choose C on
    valid, predict valid + test. With folds: see pipeline/heads/folds.py; OOF predictions are written for valid
    rows, and for train rows too when no part of the features was fine-tuned (a fine-tuned backbone saw the
    train labels, so its train OOF would flatter it). `prepared`: read_prepared(data_dir), if already read."""
    cfg = params.heads[head_name]
    labels, task = prepared or read_prepared(data_dir, LABELS)
    # the rows of each split one after another (k folds: train + valid in the data's order, then test), so
    # that every split below is a slice of X, not a copy of its rows (at 1M rows x 384: 1.2 GB less)
    groups = [("train", "valid"), ("test",)] if cfg.folds else [("train",), ("valid",), ("test",)]
    X, index = read_features(feature_folders(params, features), labels, order=lambda idx: np.concatenate(
        [np.flatnonzero(idx["split"].isin(g).to_numpy()) for g in groups]))  # labels and splits joined by id
    y = task.encode(index["label"])
    ends = np.cumsum([0] + [int(index["split"].isin(g).sum()) for g in groups])
    part = [slice(a, b) for a, b in zip(ends[:-1], ends[1:])]
    all_ids, all_splits = index["id"].to_numpy(), index["split"].to_numpy()
    t0 = time.perf_counter()
    if cfg.folds:
        dev, test = part
        head, oof, report = fit_folded(cfg, task, X[dev], y[dev], cfg.folds, params.seed)
        clean = all(params.sources[p].from_ == "pretrained" for p in params.concat.get(features, [features]))
        keep = (all_splits[dev] == "valid") | ((all_splits[dev] == "train") & clean)
        scores = np.vstack([oof[keep], head.scores(X[test])])
        ids = np.concatenate([all_ids[dev][keep], all_ids[test]])
        splits = np.concatenate([all_splits[dev][keep], all_splits[test]])
        report["oof_rows"] = int(keep.sum())
    else:
        train, valid, test = part
        X_va, y_va = X[valid], y[valid]  # one array: the head reuses its margins on it
        head, report = fit_head(cfg, task, X[train], y[train], X_va, y_va)
        ids, splits = all_ids[valid.start:test.stop], all_splits[valid.start:test.stop]
        scores = np.vstack([head.heldout_scores(X_va, y_va), head.scores(X[test])])
    report["fit_seconds"] = time.perf_counter() - t0
    write_preds(out / "preds.parquet", ids, splits, scores, task.score_columns())
    save_head(head, out)
    write_json(out / "report.json", report)
    write_params(out, head=cfg, features=[str(f) for f in feature_folders(params, features)])
    return report
