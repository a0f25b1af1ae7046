"""Embedding extraction: frozen backbone -> float32 (N, hidden) vectors, cached as Zarr + Parquet.

Speed on any device comes from tokenizing once, length-sorted batches with dynamic padding (little compute is
spent on padding) and inference mode; on GPUs also from bf16/fp16 autocast.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipeline import paths
from pipeline.devices import autocast, pick_device, resolve_precision
from pipeline.models.backbones import pretrained_encoder
from pipeline.data.batching import map_batches
from pipeline.data.load import input_column, read_prepared
from pipeline.io import write_json, write_params
from pipeline.params import Params
from pipeline.models.schemes import load_finetuned_encoder
from pipeline.cache.store import write_embeddings


def embed_frame(encoder, items, cfg_embed, device) -> np.ndarray:
    """Texts or image paths -> float32 (N, hidden) pooled embeddings, bucketed by length, in inference mode."""
    precision = resolve_precision(cfg_embed.precision, device)
    encoder.to(device).eval()
    tok = encoder.prepare(items)

    def fn(*inputs):
        with autocast(precision, device):
            return encoder(*inputs)
    return map_batches(fn, tok, cfg_embed.batch_size, device, cfg_embed.bucket, desc="embed")


def source_encoder(params: Params, source: str):
    """The frozen encoder of a source: the fine-tuned backbone, or the pretrained one as the pretrained stage
    fixed it. The embed stage and predict both build it here."""
    src = params.sources[source]
    cfg = params.backbones[src.backbone]
    if src.from_ == "finetune":
        return load_finetuned_encoder(cfg, paths.finetune(src.backbone))
    return pretrained_encoder(cfg, paths.pretrained(src.backbone))


def stored_runtime(params: Params, source: str, encoder, folder: Path | None = None):
    """embed.backend onnx/openvino: the encoder the embed stage exported into the source's artifact (`folder`,
    default its final place), run by its runtime with `encoder`'s tokenizer. The embed stage and predict both
    build it here, so new texts are embedded exactly as the cache was."""
    from pipeline.cache.runtimes import RuntimeEncoder, exported_file

    e = params.embed
    cfg = params.backbones[params.sources[source].backbone]
    return RuntimeEncoder(exported_file(folder or paths.embeddings(source), e.backend, e.quantize), e.backend,
                          encoder.tokenizer, cfg.max_length)


def run_embed(params: Params, source: str, out: Path, data_dir: Path = paths.DATA) -> dict:
    """Embed every row with the source's backbone (pretrained, or the fine-tuned one) into a Zarr cache."""
    src = params.sources[source]
    cfg = params.backbones[src.backbone]
    df, _ = read_prepared(data_dir)
    encoder = source_encoder(params, source)
    device = pick_device()
    runtime = {}
    if params.embed.backend != "torch":  # export once into this artifact; predict runs the same file
        from pipeline.cache.runtimes import export

        t0 = time.perf_counter()
        path = export(encoder, out, params.embed.backend, params.embed.quantize)
        encoder = stored_runtime(params, source, encoder, out)
        device = torch.device("cpu")  # the runtimes run on the CPU
        runtime = {"backend": params.embed.backend, "quantize": params.embed.quantize, "file": path.name,
                   "export_seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    X = embed_frame(encoder, df[input_column(df)], params.embed, device)
    seconds = time.perf_counter() - t0
    write_embeddings(out, X, df, params.embed.dtype, params.embed.chunk_rows)
    summary = {"rows": len(X), "dim": int(X.shape[1]), "seconds": seconds,
               "samples_per_s": len(X) / seconds, "device": str(device), **runtime}
    write_json(out / "summary.json", summary)
    write_params(out, source=src, backbone=cfg, embed=params.embed)
    return summary
