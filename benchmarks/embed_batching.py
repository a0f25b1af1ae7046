"""Does a row's embedding depend on the rows batched with it? The same texts embedded at two batch sizes, per path.

The embed stage's cache key leaves the batch size out where batching changes only the float summation order,
and an incremental rerun (new rows batched among themselves) equals a from-scratch pass only to that precision
(pipeline/cache/embed.py `cache_key`, docs/pipeline.md). For the torch path in bf16, ONNX Runtime int8 (the
encoder exported once, dynamic quantization of the activations) and OpenVINO int8 (int8 weights only), this
embeds --rows reviews of the default corpus (`data.max_rows`: a stratified sample) at each of --batch-sizes and
prints, between the two: the mean and the lowest row cosine, the max abs difference and the rows that are bit
for bit equal; and each one's mean cosine to the torch fp32 vectors.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/embed_batching.py [--rows 3000] [--batch-sizes 128 32]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.cache.embed import embed_frame
from pipeline.cache.runtimes import RuntimeEncoder, export
from pipeline.data.prepare import prepare_dataset
from pipeline.models.backbones import make_backbone
from pipeline.params import load_params


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two (N, D) arrays -> the cosine of each row pair, (N,)."""
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--batch-sizes", type=int, nargs=2, default=[128, 32])
    args = ap.parse_args()
    params = load_params()
    bb = params.backbones["minilm"]
    df, _, _ = prepare_dataset(params.data.model_copy(update={"max_rows": args.rows}), params.seed)
    texts, cpu = df["text"].tolist(), torch.device("cpu")
    enc = make_backbone(bb).eval()

    def cfg(batch: int, precision: str):  # the default embed params at this batch size and precision, torch
        return params.embed.model_copy(update={"batch_size": batch, "backend": "torch", "precision": precision})
    ref = embed_frame(enc, texts, cfg(args.batch_sizes[0], "fp32"), cpu)
    with tempfile.TemporaryDirectory() as tmp:
        ort = RuntimeEncoder(export(enc, Path(tmp) / "onnx", "onnx", "int8"), "onnx", enc.tokenizer, bb.max_length)
        ov = RuntimeEncoder(export(enc, Path(tmp) / "openvino", "openvino", "int8"), "openvino", enc.tokenizer,
                            bb.max_length)
        print(f"{len(texts)} rows, batch sizes {args.batch_sizes[0]} and {args.batch_sizes[1]}\n")
        print("| path | mean cosine | lowest cosine | max abs difference | rows bit for bit equal | cosine to fp32 "
              "(each batch size) |\n|---|---|---|---|---|---|")
        for name, encoder, precision in (("torch bf16", enc, "bf16"), ("onnx int8", ort, "fp32"),
                                         ("openvino int8", ov, "fp32")):
            a, b = (embed_frame(encoder, texts, cfg(n, precision), cpu) for n in args.batch_sizes)
            c = cosine(a, b)
            to_fp32 = f"{cosine(a, ref).mean():.5f} / {cosine(b, ref).mean():.5f}"
            print(f"| {name} | {c.mean():.6f} | {c.min():.6f} | {np.abs(a - b).max():.4g} | "
                  f"{int((a == b).all(1).sum())} of {len(c)} | {to_fp32} |")


if __name__ == "__main__":
    main()
