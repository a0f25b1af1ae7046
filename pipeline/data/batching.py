"""Tokenize once, then batch with dynamic padding and length bucketing.

- training: indices are shuffled, cut into mega-batches of `batch_size * 50`, sorted by length inside each,
  cut into batches, and the batch order shuffled: little padding, still random.
- embedding: fully sorted by length (no randomness needed), results scattered back to the input order.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch


def _offsets(lens: np.ndarray) -> np.ndarray:
    """Row lengths (N,) -> the N + 1 int64 offsets of the rows laid end to end."""
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)


@dataclass(eq=False)
class Tokenized:
    """Token ids of N texts, truncated, not padded: one flat int32 array and N + 1 offsets into it. As Python
    lists of ints they took about 80 MB per 65,536 short texts; here 4 MB."""
    flat: np.ndarray  # int32, every text's ids one after another
    offsets: np.ndarray  # int64 (N + 1,): text i is flat[offsets[i]:offsets[i + 1]]
    pad_id: int

    @classmethod
    def from_lists(cls, ids: Sequence[Sequence[int]], pad_id: int) -> "Tokenized":
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lens.sum()))
        return cls(flat, _offsets(lens), pad_id)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    def lengths_of(self, idx: np.ndarray) -> np.ndarray:
        """The lengths of rows `idx`: O(len(idx)), where `lengths[idx]` is O(N)."""
        return self.offsets[idx + 1] - self.offsets[idx]

    def subset(self, idx: Sequence[int]) -> "Tokenized":
        """The texts `idx` (in that order) as a Tokenized of their own (one gather, no loop over rows)."""
        idx = np.asarray(idx, dtype=np.int64)
        lens = self.lengths_of(idx)
        offsets = _offsets(lens)
        src = np.repeat(self.offsets[idx] - offsets[:-1], lens) + np.arange(offsets[-1])
        return Tokenized(self.flat[src], offsets, self.pad_id)

    def batch(self, idx: Sequence[int], pad_to: int | None = None, pin: bool = False) -> tuple[torch.Tensor, ...]:
        """The encoder's positional inputs for rows `idx` (ImageInputs has the same method)."""
        b = collate(self, idx, pad_to, pin)
        return b["input_ids"], b["attention_mask"]


# texts per tokenizer call: the fast tokenizer's encodings of a whole 65,536-row shard took about 280 MB
# at once before they became ids; a few thousand at a time keep that to a few MB
TOKENIZE_ROWS = 4096


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> Tokenized:
    texts = list(texts)
    flats, lens = [], []
    for a in range(0, len(texts), TOKENIZE_ROWS):
        part = Tokenized.from_lists(tokenizer(texts[a:a + TOKENIZE_ROWS], truncation=True, max_length=max_length,
                                              padding=False, return_attention_mask=False)["input_ids"], 0)
        flats.append(part.flat)
        lens.append(part.lengths)
    flat = np.concatenate(flats) if flats else np.zeros(0, np.int32)
    lens = np.concatenate(lens) if lens else np.zeros(0, np.int64)
    return Tokenized(flat, _offsets(lens), tokenizer.pad_token_id or 0)


def collate(tok: Tokenized, idx: Sequence[int], pad_to: int | None = None,
            pin: bool = False) -> dict[str, torch.Tensor]:
    """Pad the rows `idx` to the longest among them (or to `pad_to`, the naive fixed-length baseline).
    pin: page-locked memory, so `.to(cuda, non_blocking=True)` overlaps the copy with compute."""
    idx = np.asarray(idx, dtype=np.int64)
    lens = tok.lengths_of(idx)
    width = pad_to or int(lens.max())
    lens = np.minimum(lens, width)
    ids = np.full((len(idx), width), tok.pad_id, dtype=np.int64)
    for r, (i, n) in enumerate(zip(tok.offsets[idx], lens)):
        ids[r, :n] = tok.flat[i:i + n]
    ids = torch.from_numpy(ids)
    mask = torch.from_numpy((np.arange(width) < lens[:, None]).astype(np.int64))
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
