"""Ensemble and evaluation runs: read every model's predictions, combine, and score on test.

Predictions are aligned by id, so members may come from any stage. Weights are fit on validation only.
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


def aligned(models: list[str], df: pd.DataFrame, task: Task, split: str) -> tuple[np.ndarray, list[np.ndarray], pd.Series]:
    """-> (y, [scores per model], ids) for one split, rows in the dataset's order."""
    rows = df[df["split"] == split]
    out = []
    for m in models:
        p = read_preds(paths.preds(m)).set_index("id")
        missing = ~rows["id"].isin(p.index)
        if missing.any():
            raise PipelineError(f"{paths.preds(m)}: no {split} predictions for ids {rows['id'][missing].head(5).tolist()}")
        out.append(score_matrix(p.loc[rows["id"]].reset_index()))
    return task.encode(rows["label"]), out, rows["id"]


def run_ensemble(params: Params, out: Path, data_dir: Path = paths.DATA) -> dict:
    cfg = params.ensemble
    df, task = read_prepared(data_dir)
    y_va, s_va, ids_va = aligned(cfg.members, df, task, "valid")
    weights, loss = fit_weights(task, y_va, s_va, cfg.grid_step, cfg.method)
    _, s_te, ids_te = aligned(cfg.members, df, task, "test")
    scores = np.vstack([combine(s_va, weights, cfg.method), combine(s_te, weights, cfg.method)])
    write_preds(out / "preds.parquet", np.concatenate([ids_va, ids_te]),
                ["valid"] * len(ids_va) + ["test"] * len(ids_te), scores)
    report = {"weights": dict(zip(cfg.members, map(float, weights))), "valid_loss": loss, "method": cfg.method}
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
