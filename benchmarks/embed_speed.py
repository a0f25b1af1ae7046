"""Embedding throughput: naive loop vs ours, same process, default model and data.

naive: fixed padding to max_length, fp32, torch.no_grad, input order (the usual tutorial loop).
ours:  the embed stage's path: length-sorted batches with dynamic padding, inference_mode, `--precision`
       autocast (bf16 by default here; `auto` = fp32 on CPU, bf16/fp16 on GPU).
Prints samples/s of each, the ratio, the cosine agreement of the two embeddings, and the valid accuracy of
a logistic regression on each, so speed is not bought with accuracy.

    python benchmarks/embed_speed.py [--rows 4000] [--precision bf16] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from pipeline.accel import pick_device
from pipeline.backbones import make_backbone
from pipeline.batching import tokenize
from pipeline.data import prepare_dataset
from pipeline.embed import embed_frame
from pipeline.params import load_params


def naive(encoder, texts, batch_size, max_length, device) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            b = encoder.tokenizer(texts[i:i + batch_size], padding="max_length", truncation=True,
                                  max_length=max_length, return_tensors="pt").to(device)
            out.append(encoder(b["input_ids"], b["attention_mask"]).float().cpu().numpy())
    return np.vstack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    params = load_params()
    bb = params.backbones["minilm"]
    df, task, _ = prepare_dataset(params.data.model_copy(update={"max_rows": args.rows}), params.seed)
    texts = df["text"].tolist()
    device = pick_device()
    enc = make_backbone(bb).to(device).eval()
    cfg = params.embed.model_copy(update={"precision": args.precision, "batch_size": args.batch_size})
    embed_frame(enc, texts[:256], cfg, device)  # warm-up (allocator, kernels)

    t = time.perf_counter(); Xn = naive(enc, texts, args.batch_size, bb.max_length, device); tn = time.perf_counter() - t
    t = time.perf_counter(); Xo = embed_frame(enc, texts, cfg, device); to = time.perf_counter() - t

    cos = np.mean(np.sum(Xn * Xo, 1) / np.linalg.norm(Xn, axis=1) / np.linalg.norm(Xo, axis=1))
    y = task.encode(df["label"])
    tr, va = (df["split"] == "train").to_numpy(), (df["split"] != "train").to_numpy()
    acc = {k: LogisticRegression(max_iter=2000).fit(X[tr], y[tr]).score(X[va], y[va]) for k, X in
           (("naive", Xn), ("ours", Xo))}
    tok = tokenize(enc.tokenizer, texts, bb.max_length)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} rows={len(texts)} "
          f"max_length={bb.max_length} batch={args.batch_size} mean_tokens={tok.lengths.mean():.1f}")
    print(f"naive  fp32 fixed-pad : {len(texts) / tn:8.1f} samples/s  ({tn:.1f} s)  valid acc {acc['naive']:.4f}")
    print(f"ours   {args.precision:4s} bucketed : {len(texts) / to:8.1f} samples/s  ({to:.1f} s)  valid acc {acc['ours']:.4f}")
    print(f"speedup {tn / to:.2f}x   cosine(naive, ours) = {cos:.5f}")


if __name__ == "__main__":
    main()
