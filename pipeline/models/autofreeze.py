"""AutoFreeze (Liu et al. 2021, arXiv 2102.01386): freeze a growing front prefix of the backbone while it
trains, and stop computing that prefix at all by caching its output activations.

Units are [embeddings, block 0, ..., block L-1]. Every `autofreeze_interval` epochs, the gradients of each
still-trainable unit, summed over the interval, give one norm per unit; its relative change since the last
interval says how much the unit is still learning. Units whose change is at or below the
`autofreeze_percentile`-th percentile of the trainable units' changes freeze, but only as a contiguous
front prefix (a unit freezes only if every unit below it is frozen), never the top block, and never unfreeze.
The head always trains. Frozen units run in eval mode (no dropout), so their output is a fixed function of
the input: with `autofreeze_cache`, that output is computed once for every training row (memory, or Zarr
float16 on disk for large sets) and later steps start at the first trainable block. The cache is rebuilt
whenever the prefix grows. Each decision is logged with the frozen units and the samples/s.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time

import numpy as np
import torch

from pipeline import PipelineError
from pipeline.data.batching import Tokenized
from pipeline.devices import autocast
from pipeline.models.schemes import Scheme, Stem

log = logging.getLogger(__name__)


class ActivationCache:
    """Output of the frozen prefix for every training row: text (len_i, H) per row, images (T, H) per row.
    `where`: memory or zarr (float16 (N, T, H) on disk, rows padded). In memory the rows keep the dtype the
    prefix produced (bf16 under bf16 autocast, so the cache is exact and half the size), or float16 if asked.
    `gather` hands them back in that dtype: the next block sees exactly what the computed prefix would give."""

    def __init__(self, where: str, dtype: torch.dtype | None):
        self.where, self.dtype, self.out_dtype = where, dtype, torch.float32
        self.rows: list[torch.Tensor] = []
        self.arr = self.tmp = self.pos = None

    def build(self, encoder, inputs, k: int, device, precision: str, batch_size: int = 128) -> None:
        """One inference pass, longest rows first. Zarr rows are written batch by batch in that order (so each
        batch is one contiguous slab and no more than a batch is ever held in memory); `pos` maps row -> slot."""
        from pipeline.data.batching import sorted_batches

        n = len(inputs)
        encoder.eval()
        self.rows = [None] * n if self.where == "memory" else []
        self.pos, start = np.empty(n, dtype=np.int64), 0
        with torch.inference_mode():
            for idx in sorted_batches(inputs.lengths, batch_size):
                b = [t.to(device) for t in inputs.batch(idx)]
                with autocast(precision, device):
                    h = encoder.forward_prefix(b, k).cpu()
                self.out_dtype = h.dtype
                keep = b[1].sum(1).tolist() if len(b) > 1 else [h.shape[1]] * len(idx)  # text: drop padding
                if self.where == "memory":
                    for j, i in enumerate(idx):
                        self.rows[i] = h[j, :keep[j]].to(self.dtype or h.dtype).clone()
                    continue
                if self.arr is None:  # the first batch holds the longest rows: it fixes T
                    self._open_zarr(n, h.shape[1], h.shape[2])
                block = np.zeros((len(idx), *self.arr.shape[1:]), dtype=np.float16)
                for j in range(len(idx)):
                    block[j, :keep[j]] = h[j, :keep[j]].float().numpy()
                self.arr[start:start + len(idx)] = block
                self.pos[idx] = np.arange(start, start + len(idx))
                start += len(idx)

    def _open_zarr(self, n: int, T: int, H: int) -> None:
        import zarr

        self.tmp = tempfile.mkdtemp(prefix="autofreeze-")
        self.arr = zarr.create_array(store=f"{self.tmp}/acts.zarr", shape=(n, T, H), dtype="float16",
                                     chunks=(64, T, H), zarr_format=3)

    def gather(self, idx, width: int | None = None) -> torch.Tensor:
        """(B, width or T, H) in the prefix's output dtype, rows zero-padded to the batch's width (the mask
        hides the padding)."""
        if self.where == "zarr":
            slots = self.pos[np.asarray(idx)]
            order = np.argsort(slots)
            x = np.empty((len(idx), *self.arr.shape[1:]), np.float16)
            x[order] = self.arr.get_orthogonal_selection((slots[order], slice(None), slice(None)))
            out = torch.from_numpy(x).to(self.out_dtype)
            return out[:, :width] if width else out
        rows = [self.rows[i] for i in idx]
        w = width or max(len(r) for r in rows)
        out = torch.zeros(len(rows), w, rows[0].shape[1], dtype=self.out_dtype)
        for j, r in enumerate(rows):
            out[j, :len(r)] = r.to(self.out_dtype)
        return out

    def close(self) -> None:
        self.rows = []
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = self.arr = None


class AutoFreeze(Scheme):
    def __init__(self, model, cfg, total):
        super().__init__(model, cfg, total)
        enc = model.encoder
        if not hasattr(enc, "forward_prefix") and cfg.autofreeze_cache != "none":
            raise PipelineError(f"finetune.autofreeze_cache: {type(enc.model).__name__} cannot start at a block; "
                                "set autofreeze_cache: none")
        blocks = enc.blocks()
        self.units = [Stem(enc.model, blocks)] + blocks
        self.frozen = 0  # units[:frozen] are frozen
        self.sums = [None] * len(self.units)
        self.prev: np.ndarray | None = None
        self.cache: ActivationCache | None = None
        self.history: list[dict] = []
        self.interval = 1
        self.inputs = self.device = self.precision = None
        self.t_last, self.seen = time.perf_counter(), 0

    def setup(self, inputs, device, precision: str, steps_per_epoch: int) -> None:
        self.inputs, self.device, self.precision = inputs, device, precision
        self.interval = max(1, round(self.cfg.autofreeze_interval * steps_per_epoch))

    def state_dict(self) -> dict:
        sums = {str(i): s for i, s in enumerate(self.sums) if s is not None}
        return {"frozen": self.frozen, "prev": [] if self.prev is None else self.prev.tolist(), "sums": sums}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.freeze_to(int(state["frozen"]))  # rebuilds the cache from the restored weights
        self.prev = np.array(state["prev"]) if state["prev"] else None
        self.sums = [state["sums"].get(str(i)) for i in range(len(self.units))]

    # ---- measuring -------------------------------------------------------------------------------------
    def after_backward(self) -> None:
        """Sum this step's gradients per trainable unit (the paper's accumulated gradient)."""
        for u in range(self.frozen, len(self.units)):
            grads = [p.grad.detach().float().flatten() for p in self.units[u].parameters() if p.grad is not None]
            if grads:
                g = torch.cat(grads)
                self.sums[u] = g if self.sums[u] is None else self.sums[u].add_(g)

    def on_step(self, step: int) -> None:
        if step and step % self.interval == 0:
            self.decide(step)
        for u in self.units[:self.frozen]:
            u.eval()  # model.train() turned dropout back on; a frozen prefix must be a fixed function

    def decide(self, step: int) -> None:
        norms = np.array([s.norm().item() if s is not None else 0.0 for s in self.sums])
        self.sums = [None] * len(self.units)
        before = self.frozen
        if self.prev is not None:
            change = np.abs(norms - self.prev) / np.maximum(self.prev, 1e-12)
            live = change[self.frozen:]
            threshold = np.percentile(live, self.cfg.autofreeze_percentile)
            k = self.frozen
            while k < len(self.units) - 1 and change[k] <= threshold:  # the top block always trains
                k += 1
            self.freeze_to(k)
        self.prev = norms
        now = time.perf_counter()
        row = {"step": step, "frozen_units": self.frozen, "frozen": self.names()[:self.frozen],
               "samples_per_s": self.seen / max(now - self.t_last, 1e-9)}
        self.t_last, self.seen = now, 0
        self.history.append(row)
        log.info("autofreeze step %d: %d/%d units frozen%s, %.1f samples/s", step, self.frozen, len(self.units),
                 f" (+{self.frozen - before})" if self.frozen > before else "", row["samples_per_s"])

    def names(self) -> list[str]:
        return ["embeddings"] + [f"block{i}" for i in range(len(self.units) - 1)]

    # ---- freezing and the cache ------------------------------------------------------------------------
    def freeze_to(self, k: int) -> None:
        """Freeze units[:k] (k only grows) and rebuild the activation cache for the new prefix."""
        if k <= self.frozen:
            return
        for u in self.units[self.frozen:k]:
            u.requires_grad_(False)
            for p in u.parameters():
                p.grad = None
        self.frozen = k
        for u in self.units[:k]:
            u.eval()
        if self.cfg.autofreeze_cache != "none" and self.inputs is not None:
            if self.cache:
                self.cache.close()  # the prefix grew: the old activations are one block short
            self.cache = ActivationCache(self.where(), torch.float16 if self.cfg.autofreeze_cache_dtype == "float16"
                                         else None)
            t0, was_training = time.perf_counter(), self.model.encoder.training
            self.cache.build(self.model.encoder, self.inputs, self.blocks_frozen, self.device, self.precision)
            self.model.encoder.train(was_training)
            log.info("autofreeze: cached the output of %d frozen units for %d rows (%s) in %.1fs", k,
                     len(self.inputs), self.cache.where, time.perf_counter() - t0)

    @property
    def blocks_frozen(self) -> int:
        return max(self.frozen - 1, 0)

    def where(self) -> str:
        if self.cfg.autofreeze_cache != "auto":
            return self.cfg.autofreeze_cache
        n, L = len(self.inputs), float(np.mean(self.inputs.lengths)) or 197.0  # images: ViT-B/16 tokens
        gb = n * L * self.model.encoder.hidden_size * 4 / 2**30
        return "memory" if gb <= self.cfg.autofreeze_cache_gb else "zarr"

    def batch(self, inputs, idx, pin: bool = False) -> tuple:
        if self.cache is not None and not isinstance(inputs, Tokenized):
            return ()  # images: the cache replaces decoding and the frozen blocks
        return inputs.batch(idx, pin=pin)

    def forward(self, forward, idx, batch):
        """Logits for the rows `idx`: from the cached prefix output once there is one, else the full model."""
        self.seen += len(idx)
        if self.cache is None:
            return forward(*batch)
        enc = self.model.encoder
        width = batch[1].shape[1] if len(batch) > 1 else None
        hidden = self.cache.gather(idx, width).to(self.device, non_blocking=True)
        return self.model.head(enc.forward_from(hidden, batch, self.blocks_frozen))

    def finish(self) -> None:
        if self.cache:
            self.cache.close()
        self.cache = None
