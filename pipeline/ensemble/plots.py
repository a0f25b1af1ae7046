"""Plot data for `dvc plots show`, by task kind.

dvc.yaml declares three plots, and evaluate writes all three for every task, so nothing declared is ever
missing. What each shows depends on the task; the Vega-Lite template of each is written beside its data
(`<name>.json`, from DVC's own templates with the fields and titles filled in):

| file | binary | multiclass | multilabel | regression |
|---|---|---|---|---|
| models.csv | primary metric by model | same | same | same (RMSE by default) |
| ensemble.csv | confusion matrix | confusion matrix | F1 per label | prediction vs target |
| detail.csv | ROC curve | precision/recall/F1 per class | ROC-AUC per label | MAE per target decile |
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.metrics import binary_auc, f1_per_class, precision_recall, roc_curve, support
from pipeline.data.tasks import Task

_TEMPLATES = {"bar": "bar_horizontal", "confusion": "confusion", "line": "simple", "scatter": "scatter"}


def template(kind: str, x: str, y: str, title: str, x_label: str | None = None, y_label: str | None = None) -> dict:
    """DVC's built-in template `kind` with the fields, axis labels and title filled in (DVC fills the data)."""
    from dvc_render.vega_templates import get_template

    text = json.dumps(get_template(_TEMPLATES[kind]).content)
    for anchor, value in (("X", x), ("Y", y), ("X_LABEL", x_label or x), ("Y_LABEL", y_label or y),
                          ("TITLE", title)):
        text = text.replace(f'"<DVC_METRIC_{anchor}>"', json.dumps(value))
    return json.loads(text)


def _write(folder: Path, name: str, frame: pd.DataFrame, spec: dict) -> None:
    frame.to_csv(folder / f"{name}.csv", index=False)
    (folder / f"{name}.json").write_text(json.dumps(spec, indent=1) + "\n")


def write_plots(folder: Path, task: Task, models: list[str], metrics: dict, primary: str,
                y: np.ndarray, ens: np.ndarray) -> None:
    """models.csv / ensemble.csv / detail.csv (+ their templates) into `folder` (created).
    y: test labels as Task.encode gives them; ens: the ensemble's test scores (N, K)."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder, "models", pd.DataFrame({"model": models, primary: [metrics[m][primary] for m in models]}),
           template("bar", primary, "model", f"Test {primary} by model"))
    hard = task.hard(ens)
    if task.kind in ("binary", "multiclass"):
        names = np.asarray(task.classes)
        _write(folder, "ensemble", pd.DataFrame({"actual": names[y], "predicted": names[hard]}),
               template("confusion", "predicted", "actual", "Ensemble confusion matrix (test)"))
    elif task.kind == "multilabel":
        f1 = f1_per_class(y, hard)
        _write(folder, "ensemble", pd.DataFrame({"label": task.classes, "f1": f1}),
               template("bar", "f1", "label", "Ensemble F1 per label (test)"))
    else:
        _write(folder, "ensemble", pd.DataFrame({"target": y, "prediction": ens[:, 0]}),
               template("scatter", "target", "prediction", "Ensemble prediction vs target (test)"))

    if task.kind == "binary":
        fpr, tpr = roc_curve(y, ens[:, 0])
        frame, spec = pd.DataFrame({"fpr": fpr, "tpr": tpr}), template("line", "fpr", "tpr", "Ensemble ROC (test)")
    elif task.kind == "multiclass":
        k = len(task.classes)
        (p, r), f, n = precision_recall(y, hard, k), f1_per_class(y, hard, k), support(y, k)
        frame = pd.DataFrame({"class": task.classes, "precision": p, "recall": r, "f1": f, "support": n})
        spec = template("bar", "f1", "class", "Ensemble F1 per class (test)")
    elif task.kind == "multilabel":
        auc = [binary_auc(y[:, k], ens[:, k]) for k in range(y.shape[1])]
        frame, spec = pd.DataFrame({"label": task.classes, "roc_auc": auc}), \
            template("bar", "roc_auc", "label", "Ensemble ROC-AUC per label (test)")
    else:
        decile = pd.qcut(y, q=min(10, len(np.unique(y))), duplicates="drop")
        err = pd.Series(np.abs(ens[:, 0] - y)).groupby(np.asarray(decile.codes)).mean()
        labels = [f"{iv.left:.4g}..{iv.right:.4g}" for iv in decile.categories]
        frame = pd.DataFrame({"target_range": [labels[i] for i in err.index], "mae": err.to_numpy()})
        spec = template("bar", "mae", "target_range", "Ensemble MAE per target decile (test)")
    _write(folder, "detail", frame, spec)
