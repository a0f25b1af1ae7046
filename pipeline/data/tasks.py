"""Task definitions: how labels become training targets, which loss trains them, and how outputs become scores.

All models (the MLP head, SVM heads, ensembles) exchange predictions as a float matrix `scores` (N, K):
- binary: K=1, P(class 1); multiclass: K=n_classes probabilities; multilabel: K=n_labels probabilities;
- regression: K=1, the prediction on the original target scale.
The MLP is trained with BCE-with-logits on binary/multilabel targets and on regression targets min-max scaled
to [0, 1] (the Pawpularity recipe); cross-entropy for multiclass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from typing import TYPE_CHECKING

import numpy as np

from pipeline.data.metrics import binary_auc, f1_per_class, r2
from pipeline.params import TASK_METRICS

if TYPE_CHECKING:
    import torch


@dataclass
class Task:
    kind: str  # binary | multiclass | multilabel | regression
    classes: Optional[list[str]] = None
    y_min: float = 0.0
    y_max: float = 1.0
    label_sep: str = "|"

    @property
    def n_outputs(self) -> int:
        return 1 if self.kind in ("binary", "regression") else len(self.classes)

    @property
    def is_classification(self) -> bool:
        return self.kind != "regression"

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- labels -> arrays -------------------------------------------------------------------------------
    def encode(self, labels) -> np.ndarray:
        """Original labels (strings / numbers) -> y: int (N,) class ids, float (N,) values, or 0/1 (N, K)."""
        labels = list(labels)
        if self.kind == "regression":
            return np.asarray(labels, dtype=np.float64)
        index = {c: i for i, c in enumerate(self.classes)}
        if self.kind == "multilabel":
            y = np.zeros((len(labels), len(self.classes)), dtype=np.float32)
            for r, lab in enumerate(labels):
                for part in str(lab).split(self.label_sep):
                    y[r, index[part]] = 1.0
            return y
        return np.asarray([index[str(lab)] for lab in labels], dtype=np.int64)

    def to_unit(self, y: np.ndarray) -> np.ndarray:
        """Regression targets -> [0, 1] (what the BCE loss and SVR see)."""
        return (np.asarray(y, dtype=np.float64) - self.y_min) / max(self.y_max - self.y_min, 1e-12)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        return np.asarray(u, dtype=np.float64) * (self.y_max - self.y_min) + self.y_min

    # ---- torch side: imported here, so that heads, ensemble and evaluate never load torch --------------------
    def torch_target(self, y: np.ndarray) -> "torch.Tensor":
        import torch

        if self.kind == "multiclass":
            return torch.as_tensor(y, dtype=torch.long)
        if self.kind == "regression":
            return torch.as_tensor(self.to_unit(y), dtype=torch.float32).unsqueeze(-1)
        if self.kind == "binary":
            return torch.as_tensor(y, dtype=torch.float32).unsqueeze(-1)
        return torch.as_tensor(y, dtype=torch.float32)

    def loss(self, logits: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
        import torch.nn.functional as F

        if self.kind == "multiclass":
            return F.cross_entropy(logits.float(), target)
        return F.binary_cross_entropy_with_logits(logits.float(), target)

    def scores_from_logits(self, logits: "torch.Tensor") -> np.ndarray:
        import torch

        logits = logits.float()
        if self.kind == "multiclass":
            return torch.softmax(logits, -1).cpu().numpy()
        p = torch.sigmoid(logits).cpu().numpy()
        return self.from_unit(p) if self.kind == "regression" else p

    # ---- metrics ------------------------------------------------------------------------------------------
    def hard(self, scores: np.ndarray) -> np.ndarray:
        """Scores -> hard predictions: class ids (N,), 0/1 (N, K), or values (N,)."""
        if self.kind == "multiclass":
            return scores.argmax(1)
        if self.kind == "multilabel":
            return (scores >= 0.5).astype(int)
        return (scores[:, 0] >= 0.5).astype(int) if self.kind == "binary" else scores[:, 0]

    def score_columns(self) -> list[str]:
        """Names of the score columns in preds files and predict's output: `score_<class>` (binary: the
        positive class, classes[1]), `score` for regression."""
        if self.kind == "regression":
            return ["score"]
        return [f"score_{c}" for c in (self.classes[1:] if self.kind == "binary" else self.classes)]

    @property
    def metric_names(self) -> list[str]:
        """The metrics `metrics()` returns, in TASK_METRICS order (the first is the default primary)."""
        return list(TASK_METRICS[self.kind])

    def higher_is_better(self, name: str) -> bool:
        return TASK_METRICS[self.kind][name]

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        """Every metric of the task (names in params.TASK_METRICS): accuracy, f1 / f1_macro, ROC-AUC, log loss
        for classification; RMSE, MAE, R2 for regression."""
        return {name: self.metric(name, y, scores) for name in self.metric_names}

    def metric(self, name: str, y: np.ndarray, scores: np.ndarray) -> float:
        """One metric by name (the ensemble's weight search calls this thousands of times: no extras)."""
        k = self.kind
        if k == "regression":
            pred = scores[:, 0]
            if name == "rmse":
                return float(np.sqrt(np.mean((pred - y) ** 2)))
            if name == "mae":
                return float(np.mean(np.abs(pred - y)))
            return r2(y, pred)
        hard = self.hard(scores)
        if name in ("accuracy", "subset_accuracy"):
            return float(np.mean(np.all(np.reshape(hard == y, (len(y), -1)), axis=1)))
        if name == "f1":
            return float(f1_per_class(y, hard, 2)[1])
        if name == "f1_macro":
            return float(np.mean(f1_per_class(y, hard, len(self.classes))))
        if name == "roc_auc":
            return binary_auc(y, scores[:, 0])
        if name == "roc_auc_ovr":
            p = _normalized(scores)  # one-vs-rest, macro: NaN when a class is absent from y
            return float(np.mean([binary_auc(y == c, p[:, c]) for c in range(len(self.classes))]))
        if name == "roc_auc_macro":
            return float(np.mean([binary_auc(y[:, c], scores[:, c]) for c in range(y.shape[1])]))
        if name in ("log_loss", "log_loss_mean"):
            return self.selection_loss(y, scores)
        raise KeyError(f"{name!r} is not a {k} metric; allowed: {self.metric_names}")

    def selection_loss(self, y: np.ndarray, scores: np.ndarray) -> float:
        """What ensembles and C searches minimise on validation: log loss, or RMSE for regression."""
        return float(self.selection_losses(y, scores[None])[0])

    def selection_losses(self, y: np.ndarray, B: np.ndarray) -> np.ndarray:
        """selection_loss of each of G score matrices stacked in B (G, N, K) -> (G,): the ensemble's weight
        search scores thousands of blends in one call."""
        eps = 1e-7
        if self.kind == "regression":
            return np.sqrt(np.mean((B[:, :, 0] - y) ** 2, axis=1))
        if self.kind == "multiclass":
            p = np.clip(B, eps, 1)
            p = p / p.sum(-1, keepdims=True)
            return -np.mean(np.log(p[:, np.arange(len(y)), y]), axis=1)
        p = np.clip(B, eps, 1 - eps)
        yy = np.asarray(y, dtype=np.float64).reshape(p.shape[1:])
        if np.isin(yy, (0.0, 1.0)).all():  # hard labels: one log per entry, the same value (0 * log x is 0)
            return -np.mean(np.log(np.where(yy == 1.0, p, 1 - p)), axis=(1, 2))
        return -np.mean(yy * np.log(p) + (1 - yy) * np.log(1 - p), axis=(1, 2))


def _normalized(scores: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    p = np.clip(scores, eps, 1)
    return p / p.sum(1, keepdims=True)
