"""Prediction files: every model stage (fine-tune, heads) writes `<folder>/preds.parquet`, the ensemble and
evaluate stages read them: columns id, split, then one per score, named by `Task.score_columns()`
(`score_<class>`, or `score` for regression).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import PipelineError

EVAL_SPLITS = ("valid", "test")  # the rows every model stage predicts


def write_preds(path: str | Path, ids, splits, scores: np.ndarray, columns: list[str]) -> None:
    """ids, splits (N,), scores (N, K) -> parquet with columns id, split, *columns (K names)."""
    if scores.shape[1] != len(columns):
        raise PipelineError(f"{path}: {scores.shape[1]} score columns but {len(columns)} names")
    df = pd.DataFrame({"id": np.asarray(ids), "split": np.asarray(splits)})
    for k, name in enumerate(columns):
        df[name] = scores[:, k].astype(np.float64)
    df.to_parquet(path, index=False)


def read_preds(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: predictions not found")
    return pd.read_parquet(path)


def score_matrix(df: pd.DataFrame, columns: list[str], source: str | Path = "predictions") -> np.ndarray:
    """The (N, K) float64 scores of a preds frame, columns in the task's order."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PipelineError(f"{source}: no columns {missing} (written for another task or class list: "
                            "run `dvc repro`)")
    return df[columns].to_numpy(np.float64)
