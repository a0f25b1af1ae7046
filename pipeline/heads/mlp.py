"""The `mlp` head kind: the fine-tuning MLP head (pipeline.models.classifier.MLPHead), trained on cached embeddings with
the task's own loss (BCE on targets scaled to [0, 1], or cross-entropy for multiclass).

This is the cheap half of the recipe: once embeddings are cached, an MLP head costs seconds, and it is the
baseline `benchmarks/heads.py` compares the SVM heads with. AdamW with a cosine schedule, seeded; when a
validation split is given, the weights of the epoch with the lowest validation loss are kept (early stopping).
"""
from __future__ import annotations

import numpy as np

from pipeline.data.tasks import Task
from pipeline.models.classifier import MLPHead
from pipeline.train.probe import fit_mlp_head, head_scores


class EmbeddingMLP:
    """fit(X (N, D), y as Task.encode gives it) -> self; scores(X) -> (N, K) as described in tasks.py.
    Weight decay is 0.01 / C, so the C grid of the other heads also tunes this one."""

    def __init__(self, task: Task, hidden: int = 256, dropout: float = 0.1, epochs: int = 30, lr: float = 1e-3,
                 C: float = 1.0, batch_size: int = 64, seed: int = 0):
        self.task, self.hidden, self.dropout, self.epochs, self.lr = task, hidden, dropout, epochs, lr
        self.weight_decay, self.batch_size, self.seed = 0.01 / C, batch_size, seed
        self.net: MLPHead | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> "EmbeddingMLP":
        self.net = fit_mlp_head(self.task, X, y, X_val, y_val, self.hidden, self.dropout, self.epochs, self.lr,
                                self.weight_decay, self.batch_size, self.seed)
        return self

    def scores(self, X: np.ndarray) -> np.ndarray:
        return head_scores(self.net, self.task, X)
