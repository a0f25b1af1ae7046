"""Tokenize once, then batch with dynamic padding and length bucketing.

- training: indices are shuffled, cut into mega-batches of `batch_size * 50`, sorted by length inside each,
  cut into batches, and the batch order shuffled: little padding, still random.
- embedding: fully sorted by length (no randomness needed), results scattered back to the input order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch


@dataclass
class Tokenized:
    ids: list[list[int]]  # token ids per text, truncated, no padding
    pad_id: int

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: Sequence[int], pad_to: int | None = None, pin: bool = False) -> tuple[torch.Tensor, ...]:
        """The encoder's positional inputs for rows `idx` (ImageInputs has the same method)."""
        b = collate(self, idx, pad_to, pin)
        return b["input_ids"], b["attention_mask"]


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> Tokenized:
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                    return_attention_mask=False)
    return Tokenized(enc["input_ids"], tokenizer.pad_token_id or 0)


def collate(tok: Tokenized, idx: Sequence[int], pad_to: int | None = None,
            pin: bool = False) -> dict[str, torch.Tensor]:
    """Pad the rows `idx` to the longest among them (or to `pad_to`, the naive fixed-length baseline).
    pin: page-locked memory, so `.to(cuda, non_blocking=True)` overlaps the copy with compute."""
    rows = [tok.ids[i] for i in idx]
    width = pad_to or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        n = min(len(row), width)
        ids[r, :n] = torch.as_tensor(row[:n])
        mask[r, :n] = 1
    if pin:
        ids, mask = ids.pin_memory(), mask.pin_memory()
    return {"input_ids": ids, "attention_mask": mask}


def train_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                  bucket: bool = True, mega: int = 50) -> list[np.ndarray]:
    """One epoch of index batches. With `bucket`, batches hold rows of similar length."""
    order = rng.permutation(len(lengths))
    if bucket:
        chunks = [order[i:i + batch_size * mega] for i in range(0, len(order), batch_size * mega)]
        # stable sort keeps the random order among equal lengths
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def sorted_batches(lengths: np.ndarray, batch_size: int, bucket: bool = True) -> Iterator[np.ndarray]:
    """Inference batches, longest first (a too-large batch fails at once, not at the end)."""
    order = np.argsort(-lengths, kind="stable") if bucket else np.arange(len(lengths))
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


@torch.inference_mode()
def map_batches(fn, tok, batch_size: int, device: torch.device, bucket: bool = True,
                pad_to: int | None = None, desc: str = "batches") -> np.ndarray:
    """Apply `fn(*inputs.batch(idx)) -> (B, D)` to every row of `tok` (Tokenized or ImageInputs);
    returns float32 (N, D) in input order."""
    from tqdm.auto import tqdm

    out: np.ndarray | None = None
    n = -(-len(tok) // batch_size)
    # disable=None: a bar on a terminal, silent in CI logs and under DVC's captured output
    for idx in tqdm(sorted_batches(tok.lengths, batch_size, bucket), total=n, desc=desc, disable=None,
                    mininterval=5, leave=False):
        b = tok.batch(idx, pad_to, pin=device.type == "cuda")
        y = fn(*(t.to(device, non_blocking=True) for t in b))
        y = y.float().cpu().numpy()
        if out is None:
            out = np.empty((len(tok), y.shape[1]), dtype=np.float32)
        out[idx] = y
    return out
