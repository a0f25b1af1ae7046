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
from pipeline.data.load import LABELS, read_prepared
from pipeline.ensemble.blend import combine, crossfit_check, fit_weights, objective_loss, versus_best
from pipeline.io import read_json, write_json, write_params
from pipeline.ensemble.plots import write_plots
from pipeline.params import Params
from pipeline.preds import read_preds, score_matrix, write_preds
from pipeline.data.tasks import Task

log = logging.getLogger(__name__)


def _present(preds: pd.DataFrame, ids: pd.Series) -> np.ndarray:
    """Whether each id has a row in `preds` (indexed by id). A hash lookup: pandas' isin on Arrow strings
    took 60 ms a call here, two thirds of the stage's work on the default data."""
    if preds.index.is_unique:
        return preds.index.get_indexer(ids) >= 0
    return ids.isin(preds.index).to_numpy()


def aligned(models: list[str], df: pd.DataFrame, task: Task, split: str, optional: str | None = None,
            where=paths.preds) -> tuple[np.ndarray, list[np.ndarray], pd.Series]:
    """-> (y, [scores per model], ids) for one split, rows in the dataset's order. Every member must predict
    every row of `split`; rows of the `optional` split are added where every member predicts them.
    `where(model)`: its predictions file."""
    preds = {m: read_preds(where(m)).set_index("id") for m in models}
    rows = df[df["split"] == split]
    for m, p in preds.items():
        missing = ~_present(p, rows["id"])
        if missing.any():
            raise PipelineError(f"{where(m)}: no {split} predictions for ids {rows['id'][missing].head(5).tolist()}")
    if optional:
        extra = df[df["split"] == optional]
        extra = extra[np.logical_and.reduce([_present(p, extra["id"]) for p in preds.values()])]
        rows = pd.concat([rows, extra])
    out = [score_matrix(p.loc[rows["id"]], task.score_columns(), where(m)) for m, p in preds.items()]
    return task.encode(rows["label"]), out, rows["id"]


def run_ensemble(params: Params, out: Path, data_dir: Path = paths.DATA) -> dict:
    """Fit the blend's weights on the valid rows (+ train OOF rows) -> preds.parquet (valid + test) and
    weights.json (weights, objective, the cross-fitted check against the best member, fit rows)."""
    cfg = params.ensemble
    df, task = read_prepared(data_dir, LABELS)
    y_fit, s_fit, ids_fit = aligned(cfg.members, df, task, "valid", optional="train")
    primary = params.primary_metric
    loss = objective_loss(task, cfg.objective, primary, cfg.method)
    weights, fit_loss = fit_weights(task, y_fit, s_fit, cfg.grid_step, cfg.method, loss)
    report = {"weights": dict(zip(cfg.members, map(float, weights))), "fit_loss": fit_loss,
              "objective": cfg.objective, "method": cfg.method}
    if len(cfg.members) > 1 and cfg.method == "mean":
        check = crossfit_check(task, y_fit, s_fit, cfg.members, cfg.grid_step, cfg.method, loss, primary,
                               seed=params.seed)
        check["fallback"] = bool(cfg.fallback and check["gain"] < 0)
        if check["fallback"]:  # blending did not help where it can be measured: trust the best member alone
            log.warning("ensemble: the cross-fitted blend scores %s %.4f on the fit rows, below %s alone "
                        "(%.4f): using %s alone", primary, check["blend"], check["best_member"],
                        check["best_member_value"], check["best_member"])
            weights = np.array([float(m == check["best_member"]) for m in cfg.members])
            report["weights"] = dict(zip(cfg.members, map(float, weights)))
        report["check"] = check
    n_va = int((df["split"] == "valid").sum())  # valid rows come first in `aligned`
    s_va, ids_va = [s[:n_va] for s in s_fit], ids_fit[:n_va]
    _, s_te, ids_te = aligned(cfg.members, df, task, "test")
    scores = np.vstack([combine(s_va, weights, cfg.method), combine(s_te, weights, cfg.method)])
    write_preds(out / "preds.parquet", np.concatenate([ids_va, ids_te]),
                ["valid"] * len(ids_va) + ["test"] * len(ids_te), scores, task.score_columns())
    report["fit_rows"] = {"valid": n_va, "train_oof": len(ids_fit) - n_va}
    log.info("ensemble weights fit on %d valid + %d train OOF rows", n_va, len(ids_fit) - n_va)
    write_json(out / "weights.json", report)
    write_params(out, ensemble=cfg, primary=primary)
    return {k: v for k, v in report.items() if k != "check"} | (
        {"blend_gain_on_valid": report["check"]["gain"]} if "check" in report else {})


def run_evaluate(params: Params, out: Path, data_dir: Path = paths.DATA, ensemble: Path = paths.ENSEMBLE) -> dict:
    """Test metrics of every model and the ensemble (what `run_ensemble` wrote to `ensemble`) -> metrics.json,
    plus `ensemble_valid` (the ensemble's cross-fitted check against the best member on the fit rows) and
    `ensemble_vs_best` (the ensemble against its best member on test, with a paired bootstrap 95% interval
    and a McNemar p-value: blend.versus_best); plot data -> plots/ (plots.py)."""
    df, task = read_prepared(data_dir, LABELS)
    models = [m for m in params.model_names() if paths.preds(m).exists()] + ["ensemble"]
    y, scores, _ = aligned(models, df, task, "test",
                           where=lambda m: ensemble / "preds.parquet" if m == "ensemble" else paths.preds(m))
    metrics = {m: task.metrics(y, s) for m, s in zip(models, scores)}
    primary = params.primary_metric
    weights = ensemble / "weights.json"
    report = read_json(weights) if weights.exists() else {}
    members = {m: s for m, s in zip(models, scores) if m in report.get("weights", {})}
    if members:
        vs = metrics["ensemble_vs_best"] = versus_best(task, primary, y, scores[-1], members)
        log.info("ensemble vs its best member on test (%s): %s %.4f vs %.4f, difference %+.4f, 95%% interval "
                 "%+.4f..%+.4f (paired bootstrap, %d resamples), McNemar p %s", vs["member"], primary,
                 vs["blend_value"], vs["member_value"], vs["delta"], vs["ci95_low"], vs["ci95_high"], vs["n_boot"],
                 "n/a" if vs["p_mcnemar"] is None else f"{vs['p_mcnemar']:.3f}")
    check = report.get("check")
    if check:
        metrics["ensemble_valid"] = {k: check[k] for k in ("metric", "blend", "best_member", "best_member_value",
                                                           "gain", "fallback")}
    write_json(out / "metrics.json", metrics)
    write_plots(out / "plots", task, models, metrics, primary, y, scores[-1])
    write_params(out, evaluate=params.evaluate, primary=primary)
    return {m: round(metrics[m][primary], 4) for m in models}
