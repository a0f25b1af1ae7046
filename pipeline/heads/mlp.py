"""The `mlp` head kind: the fine-tuning MLP head (pipeline.models.classifier.MLPHead), trained on cached embeddings with
the task's own loss (BCE on targets scaled to [0, 1], or cross-entropy for multiclass).

This is the cheap half of the recipe: once embeddings are cached, an MLP head costs seconds, and it is the
baseline `benchmarks/heads.py` compares the SVM heads with. AdamW with a cosine schedule, seeded; when a
validation split is given, the weights of the epoch with the lowest validation loss are kept (early stopping).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.models.classifier import MLPHead
from pipeline.data.tasks import Task


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
        g = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        Xt, yt = torch.as_tensor(X, dtype=torch.float32), self.task.torch_target(y)
        self.net = MLPHead(X.shape[1], self.task.n_outputs, self.hidden, self.dropout)
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = self.epochs * math.ceil(len(Xt) / self.batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        best = (np.inf, None)
        for _ in range(self.epochs):
            self.net.train()
            for idx in torch.randperm(len(Xt), generator=g).split(self.batch_size):
                loss = self.task.loss(self.net(Xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            self.net.eval()
            if X_val is not None:
                loss = self.task.selection_loss(y_val, self.scores(X_val))
                if loss < best[0]:
                    best = (loss, {k: v.clone() for k, v in self.net.state_dict().items()})
        if best[1] is not None:
            self.net.load_state_dict(best[1])
        return self

    @torch.inference_mode()
    def scores(self, X: np.ndarray) -> np.ndarray:
        logits = torch.cat([self.net(b) for b in torch.as_tensor(X, dtype=torch.float32).split(4096)])
        return self.task.scores_from_logits(logits)
