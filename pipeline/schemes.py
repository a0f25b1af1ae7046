"""Fine-tuning schemes: which parameters train at which step.

- full: everything trains.
- freeze: the classic linear probe; only the head trains (the backbone runs in eval mode, no dropout).
- gradual (ULMFiT gradual unfreezing): the head trains from step 0; every `unfreeze_every` steps one more
  transformer block unfreezes, top first; the embeddings unfreeze after the last block.
Frozen parameters keep `requires_grad=False`, so they get no gradient and AdamW leaves them untouched.
"""
from __future__ import annotations

import logging

from torch import nn

from pipeline.params import FinetuneParams

log = logging.getLogger(__name__)


class Scheme:
    def __init__(self, model: nn.Module, cfg: FinetuneParams, total: int):
        self.model, self.cfg, self.total = model, cfg, total

    def on_step(self, step: int) -> None:
        """Called before optimizer step `step` (0-based)."""

    def finish(self) -> None:
        """Called after the last step."""

    def trainable_backbone(self) -> bool:
        return True


class Full(Scheme):
    pass


class Freeze(Scheme):
    def __init__(self, model, cfg, total):
        super().__init__(model, cfg, total)
        model.encoder.requires_grad_(False)

    def on_step(self, step: int) -> None:
        self.model.encoder.eval()  # model.train() re-enables dropout each step; a probe wants none

    def trainable_backbone(self) -> bool:
        return False


class Gradual(Scheme):
    def __init__(self, model, cfg, total):
        super().__init__(model, cfg, total)
        self.blocks = model.encoder.blocks()
        model.encoder.requires_grad_(False)
        self.unfrozen = -1

    def units(self, k: int) -> list[nn.Module]:
        """The first k units to unfreeze, top block first, then the embeddings, then everything."""
        order = list(reversed(self.blocks)) + [self.model.encoder.embeddings_module()]
        return order[:k] if k <= len(order) else [self.model.encoder]

    def on_step(self, step: int) -> None:
        k = step // self.cfg.unfreeze_every
        if k == self.unfrozen:
            return
        self.unfrozen = k
        for unit in self.units(k):
            unit.requires_grad_(True)
        log.info("gradual unfreezing: step %d, %d unit(s) trainable", step, k)


SCHEMES = {"full": Full, "freeze": Freeze, "gradual": Gradual}


def make_scheme(cfg: FinetuneParams, model: nn.Module, total: int) -> Scheme:
    return SCHEMES[cfg.scheme](model, cfg, total)
