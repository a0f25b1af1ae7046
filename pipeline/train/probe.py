"""An MLP head trained on fixed embeddings: the `mlp` head kind on cached features, and LP-FT's first step.

`fit_mlp_head(task, X, y, ...)` -> MLPHead: AdamW with a cosine schedule, seeded, keeping the epoch with the
lowest validation loss when a validation split is given. `probe_head(head, encoder, ...)` is LP-FT (linear
probing, then fine-tuning; Kumar et al. 2022): before fine-tuning, the head is trained this way on the frozen
encoder's embeddings of the train rows, so that fine-tuning starts from a head that already fits, not from
a random one that pulls the backbone's features around in the first steps.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from pipeline.data.batching import Tokenized, map_batches
from pipeline.data.tasks import Task
from pipeline.devices import autocast
from pipeline.models.classifier import MLPHead


def fit_mlp_head(task: Task, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
                 y_val: np.ndarray | None = None, hidden: int = 256, dropout: float = 0.1, epochs: int = 30,
                 lr: float = 1e-3, weight_decay: float = 0.01, batch_size: int = 64, seed: int = 0) -> MLPHead:
    """X (N, D) float32 features, y as Task.encode gives it -> a trained MLPHead (D -> task.n_outputs), in
    eval mode. With X_val / y_val, the weights of the epoch with the lowest validation loss are kept."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    Xt, yt = torch.as_tensor(X, dtype=torch.float32), task.torch_target(y)
    net = MLPHead(X.shape[1], task.n_outputs, hidden, dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(Xt) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    best = (np.inf, None)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(Xt), generator=g).split(batch_size):
            loss = task.loss(net(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        if X_val is not None:
            loss = task.selection_loss(y_val, head_scores(net, task, X_val))
            if loss < best[0]:
                best = (loss, {k: v.clone() for k, v in net.state_dict().items()})
    if best[1] is not None:
        net.load_state_dict(best[1])
    return net


@torch.inference_mode()
def head_scores(net: MLPHead, task: Task, X: np.ndarray) -> np.ndarray:
    """Features (N, D) -> scores (N, K) as described in tasks.py."""
    logits = torch.cat([net(b) for b in torch.as_tensor(X, dtype=torch.float32).split(4096)])
    return task.scores_from_logits(logits)


def probe_head(head: MLPHead, encoder, task: Task, train: tuple[Tokenized, np.ndarray],
               valid: tuple[Tokenized, np.ndarray], epochs: int, seed: int, device: torch.device,
               precision: str, batch_size: int = 128) -> dict:
    """LP-FT: embed the train and valid rows with the frozen `encoder` (pooled, (N, hidden)), fit an MLP head
    of `head`'s shape on them for `epochs` (early-stopped on valid) and copy its weights into `head`.
    -> {probe_seconds, probe_valid_accuracy} (the probe alone on valid)."""
    t0 = time.perf_counter()
    encoder.to(device).eval()

    def fn(*inputs):
        with torch.inference_mode(), autocast(precision, device):
            return encoder(*inputs)
    X_tr, X_va = (map_batches(fn, tok, batch_size, device, desc="probe embed") for tok in (train[0], valid[0]))
    c = head.config
    net = fit_mlp_head(task, X_tr, train[1], X_va, valid[1], int(c["hidden"]), float(c["dropout"]), epochs,
                       seed=seed)
    head.load_state_dict(net.state_dict())
    acc = task.metrics(valid[1], head_scores(net, task, X_va)).get("accuracy")
    return {"probe_seconds": time.perf_counter() - t0, "probe_valid_accuracy": acc}
