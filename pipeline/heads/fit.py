"""The head stage: fit one head on cached features (a source, or several concatenated) and write its
predictions, the stored head and a report. Single heads come from `estimators.fit_head`, k-fold ones from
`folds.fit_folded`; this module is their only caller in the pipeline.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.cache.store import read_features
from pipeline.data.load import read_prepared
from pipeline.heads.estimators import fit_head
from pipeline.heads.folds import fit_folded
from pipeline.heads.store import save_head
from pipeline.io import write_json, write_params
from pipeline.params import Params
from pipeline.preds import EVAL_SPLITS, write_preds


def feature_folders(params: Params, features: str) -> list[Path]:
    parts = params.concat.get(features, [features])
    return [paths.embeddings(p) for p in parts]


def run_head(params: Params, features: str, head_name: str, out: Path, data_dir: Path = paths.DATA) -> dict:
    """Fit a head on cached features (a source or a concat of sources) -> preds.parquet, the head
    (pipeline/heads/store.py: head.json, estimators.pkl), report.json. Without folds: fit on train, choose C on valid, predict valid + test. With folds: see
    pipeline/heads/folds.py; OOF predictions are written for valid rows, and for train rows too when no part of
    the features was fine-tuned (a fine-tuned backbone saw the train labels, so its train OOF would flatter it)."""
    cfg = params.heads[head_name]
    labels, task = read_prepared(data_dir)
    X, index = read_features(feature_folders(params, features), labels)  # labels and splits joined by id
    y = task.encode(index["label"])
    sel = {s: (index["split"] == s).to_numpy() for s in ("train", *EVAL_SPLITS)}
    t0 = time.perf_counter()
    if cfg.folds:
        dev = sel["train"] | sel["valid"]
        head, oof, report = fit_folded(cfg, task, X[dev], y[dev], cfg.folds, params.seed)
        clean = all(params.sources[p].from_ == "pretrained" for p in params.concat.get(features, [features]))
        keep = sel["valid"][dev] | (sel["train"][dev] if clean else False)
        ids, splits = index["id"][dev][keep], index["split"][dev][keep]
        scores = np.vstack([oof[keep], head.scores(X[sel["test"]])])
        ids = np.concatenate([ids, index["id"][sel["test"]]])
        splits = np.concatenate([splits, index["split"][sel["test"]]])
        report["oof_rows"] = int(keep.sum())
    else:
        X_va, y_va = X[sel["valid"]], y[sel["valid"]]  # one array: the head reuses its margins on it
        head, report = fit_head(cfg, task, X[sel["train"]], y[sel["train"]], X_va, y_va)
        ids = np.concatenate([index["id"][sel["valid"]], index["id"][sel["test"]]])
        splits = np.concatenate([index["split"][sel["valid"]], index["split"][sel["test"]]])
        scores = np.vstack([head.heldout_scores(X_va, y_va), head.scores(X[sel["test"]])])
    report["fit_seconds"] = time.perf_counter() - t0
    write_preds(out / "preds.parquet", ids, splits, scores, task.score_columns())
    save_head(head, out)
    write_json(out / "report.json", report)
    write_params(out, head=cfg, features=[str(f) for f in feature_folders(params, features)])
    return report
