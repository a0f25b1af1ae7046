"""Classifier = backbone encoder + MLP head. The head alone is also what the `mlp` cached-embedding head uses."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class MLPHead(nn.Module):
    """(B, in_dim) -> (B, n_out) logits. hidden=0 gives a linear head."""

    def __init__(self, in_dim: int, n_out: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.config = {"in_dim": in_dim, "n_out": n_out, "hidden": hidden, "dropout": dropout}
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or in_dim, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def save(self, path: str | Path) -> None:
        meta = {k: str(v) for k, v in self.config.items()}
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "MLPHead":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            m = f.metadata()
        head = cls(int(m["in_dim"]), int(m["n_out"]), int(m["hidden"]), float(m["dropout"]))
        head.load_state_dict(load_file(str(path)))
        return head


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: MLPHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """(input_ids, attention_mask) for text, (pixels,) for images -> logits (B, n_out)."""
        return self.head(self.encoder(*inputs))
