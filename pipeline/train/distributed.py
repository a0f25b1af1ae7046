"""Scaling out and up without a distributed layer of our own.

- DDP: run the finetune stage under `torchrun --nproc_per_node N -m stages.finetune <bb>` (or
  `accelerate launch -m stages.finetune <bb>`). The launcher sets RANK/WORLD_SIZE/LOCAL_RANK; we init the
  process group (pipeline/devices.py: NCCL on GPUs, gloo on CPU), wrap the model in torch's
  DistributedDataParallel, and give each rank every N-th batch of the epoch's (seeded, identical) batch list. Rank 0 alone logs and writes.
- auto batch: on a GPU, the largest micro-batch (halving from the effective batch) whose forward + backward
  on the longest rows fits in memory; grad accumulation keeps the effective batch.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import torch

from pipeline import PipelineError

log = logging.getLogger(__name__)


def shard(batches: list, rank: int, world: int) -> list:
    """Every rank gets the same number of batches (the tail that does not divide evenly is dropped)."""
    if world == 1:
        return batches
    return batches[:len(batches) - len(batches) % world][rank::world]


def wrap(model: torch.nn.Module, device: torch.device, world: int, scheme: str) -> torch.nn.Module:
    if world == 1:
        return model
    if scheme in ("gradual", "autofreeze"):
        # DDP registers gradient hooks once, at wrap time: parameters (un)frozen later would break its sync.
        raise PipelineError(f"finetune.scheme {scheme!r} is not supported under DDP; use full, freeze, lora or adapter")
    from torch.nn.parallel import DistributedDataParallel

    # some architectures carry weights our pooling never uses; DDP must not wait for their gradients
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def largest_fitting(effective: int, fits: Callable[[int], bool]) -> tuple[int, int]:
    """Halve from the effective batch until `fits(b)`; -> (micro batch, grad accumulation steps)."""
    b = effective
    while b > 1 and not fits(b):
        b //= 2
    if not fits(b):
        raise PipelineError("finetune.auto_batch: not even a batch of 1 fits in GPU memory")
    return b, math.ceil(effective / b)


def memory_probe(model, task, tok, y, device, autocast_ctx) -> Callable[[int], bool]:
    """fits(b): one forward + backward on the b longest training rows (the worst case) without OOM."""
    order = np.argsort(-tok.lengths, kind="stable")
    target = task.torch_target(y)

    def fits(b: int) -> bool:
        idx = order[:b]
        batch = tok.batch(idx)
        try:
            with autocast_ctx():
                logits = model(*(t.to(device) for t in batch))
            task.loss(logits, target[idx].to(device)).backward()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    return fits

