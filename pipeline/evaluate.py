"""Ensemble and evaluation runs: read every model's predictions, combine, and score on test.

Predictions are aligned by id, so members may come from any stage. Weights are fit on the valid rows, plus
the train rows for which every member wrote an out-of-fold prediction (k-fold heads on pretrained features);
never on test.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import PipelineError, paths
from pipeline.data import read_prepared
from pipeline.ensemble import combine, fit_weights
from pipeline.io import write_json, write_params
from pipeline.params import Params
from pipeline.store import read_preds, score_matrix, write_preds
from pipeline.tasks import Task

log = logging.getLogger(__name__)


def aligned(models: list[str], df: pd.DataFrame, task: Task, split: str,
            optional: str | None = None) -> tuple[np.ndarray, list[np.ndarray], pd.Series]:
    """-> (y, [scores per model], ids) for one split, rows in the dataset's order. Every member must predict
    every row of `split`; rows of the `optional` split are added where every member predicts them."""
    preds = {m: read_preds(paths.preds(m)).set_index("id") for m in models}
    rows = df[df["split"] == split]
    for m, p in preds.items():
        missing = ~rows["id"].isin(p.index)
        if missing.any():
            raise PipelineError(f"{paths.preds(m)}: no {split} predictions for ids {rows['id'][missing].head(5).tolist()}")
    if optional:
        extra = df[df["split"] == optional]
        extra = extra[np.logical_and.reduce([extra["id"].isin(p.index) for p in preds.values()])]
        rows = pd.concat([rows, extra])
    out = [score_matrix(p.loc[rows["id"]].reset_index()) for p in preds.values()]
    return task.encode(rows["label"]), out, rows["id"]


def run_ensemble(params: Params, out: Path, data_dir: Path = paths.DATA) -> dict:
    cfg = params.ensemble
    df, task = read_prepared(data_dir)
    y_fit, s_fit, ids_fit = aligned(cfg.members, df, task, "valid", optional="train")
    weights, loss = fit_weights(task, y_fit, s_fit, cfg.grid_step, cfg.method)
    n_va = int((df["split"] == "valid").sum())  # valid rows come first in `aligned`
    s_va, ids_va = [s[:n_va] for s in s_fit], ids_fit[:n_va]
    _, s_te, ids_te = aligned(cfg.members, df, task, "test")
    scores = np.vstack([combine(s_va, weights, cfg.method), combine(s_te, weights, cfg.method)])
    write_preds(out / "preds.parquet", np.concatenate([ids_va, ids_te]),
                ["valid"] * len(ids_va) + ["test"] * len(ids_te), scores)
    report = {"weights": dict(zip(cfg.members, map(float, weights))), "fit_loss": loss, "method": cfg.method,
              "fit_rows": {"valid": n_va, "train_oof": len(ids_fit) - n_va}}
    log.info("ensemble weights fit on %d valid + %d train OOF rows", n_va, len(ids_fit) - n_va)
    write_json(out / "weights.json", report)
    write_params(out, ensemble=cfg)
    return report


def default_metric(task: Task) -> str:
    return "rmse" if task.kind == "regression" else "accuracy"


def run_evaluate(params: Params, out: Path, data_dir: Path = paths.DATA) -> dict:
    """Test metrics of every model and the ensemble -> metrics.json; plot data -> plots/*.csv."""
    df, task = read_prepared(data_dir)
    models = [m for m in params.model_names() if paths.preds(m).exists()] + ["ensemble"]
    y, scores, _ = aligned(models, df, task, "test")
    metrics = {m: task.metrics(y, s) for m, s in zip(models, scores)}
    write_json(out / "metrics.json", metrics)
    primary = params.evaluate.primary or default_metric(task)
    plots = out / "plots"
    plots.mkdir()
    pd.DataFrame({"model": models, primary: [metrics[m][primary] for m in models]}).to_csv(
        plots / "models.csv", index=False)
    ens = scores[-1]
    if task.kind in ("binary", "multiclass"):
        names = np.asarray(task.classes)
        pd.DataFrame({"actual": names[y], "predicted": names[task.hard(ens)]}).to_csv(
            plots / "confusion.csv", index=False)
    if task.kind == "binary":
        from sklearn.metrics import roc_curve
        fpr, tpr, _ = roc_curve(y, ens[:, 0])
        pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(plots / "roc.csv", index=False)
    if task.kind == "regression":
        pd.DataFrame({"target": y, "prediction": ens[:, 0]}).to_csv(plots / "scatter.csv", index=False)
    write_params(out, evaluate=params.evaluate)
    return {m: round(metrics[m][primary], 4) for m in models}
