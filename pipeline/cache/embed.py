"""Embedding extraction: frozen backbone -> float32 (N, hidden) vectors, cached as Zarr + Parquet.

Speed on any device comes from tokenizing once, length-sorted batches with dynamic padding (little compute is
spent on padding) and inference mode; on GPUs also from bf16/fp16 autocast.

Incremental: every vector is keyed by (`cache_key`: the sha256 of the encoder's weight files, pooling,
max_length or the image transform, precision, runtime, storage dtype, device type; under ONNX Runtime int8 also
the batching) and its row's input hash (pipeline/data/inputs.py). A rerun reuses the rows of the previous store
(the stage's own output, kept by `persist: true` in dvc.yaml) whose input hash it holds under the same key, and
embeds only the others; a store with another key is never reused.

Several processes: under `torchrun --nproc_per_node N -m stages.embed <source>` (or `accelerate launch`, or
several nodes) each rank embeds its own shards (pipeline/cache/stream.py `assign`) into the one partial store,
and rank 0 finishes it; the store equals a single process's bit for bit, as a shard's vectors depend on its
rows alone.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import paths
from pipeline.devices import (autocast, barrier, finish_distributed, gather, init_distributed, pick_device,
                              resolve_precision)
from pipeline.models.backbones import fingerprint, pretrained_encoder, saves_weights
from pipeline.data.batching import map_batches
from pipeline.data.inputs import InputRows
from pipeline.io import file_sha256, write_json, write_params
from pipeline.params import Params
from pipeline.models.schemes import load_finetuned_encoder
from pipeline.cache.store import copy_rows, reusable, write_index
from pipeline.cache.stream import partial_folder, shared_writer

log = logging.getLogger(__name__)
WAIT_S = 24 * 3600  # how long a rank may wait for the others under a launcher


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


def encoder_files(params: Params, source: str) -> dict[str, str]:
    """sha256 of the files the source's frozen encoder is loaded from, by path under artifacts/: the pretrained
    stage's saved weights (random-init backbones), or the fine-tuned model/ (or adapter and its scheme)."""
    src = params.sources[source]
    if src.from_ == "finetune":
        folder = paths.finetune(src.backbone)
        files = sorted(f for f in (folder / "model").rglob("*") if f.is_file())
        files += [folder / n for n in ("scheme.json", "adapter.safetensors") if (folder / n).is_file()]
    else:
        folder = paths.pretrained(src.backbone)
        files = [folder / "model.safetensors"] if saves_weights(params.backbones[src.backbone]) else []
    return {f.relative_to(folder.parent.parent).as_posix(): file_sha256(f) for f in files if f.is_file()}


def cache_key(params: Params, source: str, encoder, device) -> dict:
    """What a cached vector depends on besides its input: -> {"key": sha256 hex, "parts": the readable parts}.
    Batch size, bucketing and shard size are left out, since they change only float rounding (1e-6 in fp32, at
    most 0.0049 in bf16: benchmarks/RESULTS.md), except under ONNX Runtime int8 (below)."""
    src, e = params.sources[source], params.embed
    cfg = params.backbones[src.backbone]
    fp = fingerprint(cfg)  # the configured weights; a hub name or a random-init timm model: pinned by name
    parts = {"backbone": fp if fp["files"] else {"name": cfg.name, **fp}, "weights": encoder_files(params, source),
             "modality": cfg.modality, "precision": resolve_precision(e.precision, device), "backend": e.backend,
             "quantize": e.quantize, "dtype": e.dtype, "device": torch.device(device).type}
    if e.backend == "onnx" and e.quantize == "int8":
        # dynamic quantization scales each batch's activations by that batch's range, so a row's vector depends
        # on the rows batched with it: between batches of 128 and 32, cosine 0.991 on average and 0.966 at
        # worst, as far apart as int8 is from fp32 (benchmarks/RESULTS.md). Another batching re-embeds; rows are
        # batched within their shard, so shard_rows is part of the batching.
        parts.update(batch_size=e.batch_size, bucket=e.bucket, shard_rows=e.shard_rows)
    if cfg.modality == "image":
        parts.update(transform=getattr(encoder, "data_config", None), model_kwargs=cfg.model_kwargs)
    else:
        parts.update(pooling=cfg.pooling, max_length=cfg.max_length, attn_implementation=cfg.attn_implementation)
    parts = json.loads(json.dumps(parts, sort_keys=True, default=str))  # tuples -> lists, as key.json holds them
    return {"key": hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), "parts": parts}


def run_embed(params: Params, source: str, out: Path, inputs_dir: Path = paths.INPUTS,
              previous: Path | None = None) -> dict:
    """Embed every row of artifacts/inputs with the source's backbone (pretrained, or the fine-tuned one) into
    a Zarr cache in `out`, reusing the vectors of `previous` (default: the source's current store) that have
    the same cache key and input hash. Shard by shard (pipeline/cache/stream.py): each shard's reused rows are
    copied bit for bit, its other rows embedded in batches of that shard, and the shard written, so memory
    holds one shard; a full shard of the same rows in the same order as the old store's is its file, copied
    (`ShardWriter.carry`: rows appended rewrite only the shards they fall in); a killed run's finished shards
    are resumed. The result equals a from-scratch embed up to
    float summation order (a full pass batches rows with other rows); under ONNX Runtime int8, up to its
    per-batch quantization (`cache_key`). Under a launcher (RANK, WORLD_SIZE set)
    this rank writes its share of the shards; rank 0 waits for all, then writes the store's other files into
    `out` (another rank's `out` stays empty) -> the summary (`per_rank`: each rank's shards and rows)."""
    src = params.sources[source]
    cfg = params.backbones[src.backbone]
    e = params.embed
    inputs = InputRows(inputs_dir)  # read shard by shard: inputs, ids and hashes
    encoder = source_encoder(params, source)
    # a rank done with its shards waits for the slowest (up to a shard's work; all of it for a rank with no
    # shard): longer than torch's default timeouts on a slow device. A failed rank is stopped by the launcher.
    rank, world, device = init_distributed(pick_device(), timeout_s=WAIT_S)
    runtime = {}
    if e.backend != "torch":  # export once into this artifact; predict runs the same file
        from pipeline.cache.runtimes import export

        t0 = time.perf_counter()
        path = export(encoder, out, e.backend, e.quantize)
        encoder = stored_runtime(params, source, encoder, out)
        device = torch.device("cpu")  # the runtimes run on the CPU
        runtime = {"backend": e.backend, "quantize": e.quantize, "file": path.name,
                   "export_seconds": time.perf_counter() - t0}
    key = cache_key(params, source, encoder, device)
    final = paths.embeddings(source) if previous is None else Path(previous)
    old = reusable(final, key)  # the old store's hashes as a compact lookup (HashRows), not its index
    dim = old[0].shape[1] if old else None

    def first_dim() -> int:  # several ranks: the array exists before any rank writes
        return dim or embed_frame(encoder, inputs.items(0, 1), e, device).shape[1]

    part = partial_folder(final, key["key"], (b.column(0) for b in inputs.batches(["input_hash"])), e.shard_rows,
                          e.chunk_rows, e.dtype, n=inputs.n)
    writer, mine = shared_writer(part, inputs.n, e.dtype, e.shard_rows, e.chunk_rows, rank, world, first_dim, barrier)
    seconds, embedded, reused, copied = 0.0, 0, 0, 0
    resumed = sum(hi - lo for lo, hi in map(writer.rows, writer.done))
    for s in mine:
        lo, hi = writer.rows(s)
        rows = old[1](inputs.keys(lo, hi, ("input_hash",)).column(0), lo) if old else np.full(hi - lo, np.nan)
        h = ~np.isnan(rows)
        if h.all() and writer.carry(s, old[0], final / "vectors.zarr", rows):
            reused, copied = reused + hi - lo, copied + 1  # the old shard's file, as it was
            continue
        todo = np.flatnonzero(~h)
        block = None
        if len(todo):
            t0 = time.perf_counter()
            X_new = embed_frame(encoder, inputs.items(lo, hi).iloc[todo].reset_index(drop=True), e, device)
            seconds += time.perf_counter() - t0
            block = np.empty((hi - lo, X_new.shape[1]), dtype=e.dtype)
            block[todo] = X_new
        if h.any():
            block = np.empty((hi - lo, old[0].shape[1]), dtype=e.dtype) if block is None else block
            block[h] = copy_rows(old[0], rows[h].astype(np.int64))
        dim = block.shape[1]
        writer.write(s, block)
        embedded, reused = embedded + len(todo), reused + int(h.sum())
        log.debug("embed %s: shard %d of %d written (%d embedded)", source, s, writer.n_shards, len(todo))
    if world > 1:
        log.info("embed %s: rank %d of %d wrote shards %s: %d rows embedded, %d reused", source, rank, world,
                 mine, embedded, reused)
    stats = {"rank": rank, "shards": mine, "embedded": embedded, "reused": reused, "copied": copied,
             "seconds": seconds}
    per_rank = gather(stats)  # also waits until every rank's shards are written and recorded
    if rank:
        finish_distributed()
        return {**stats, "shards": len(mine), "note": "rank 0 writes the store"}
    embedded, reused, copied = (sum(r[k] for r in per_rank) for k in ("embedded", "reused", "copied"))
    seconds = max(r["seconds"] for r in per_rank)  # the ranks run side by side
    log.info("embed %s: %d rows reused from the previous store, %d embedded, %d resumed from a killed run (%d of "
             "%d shards copied as files; key %s)", source, reused, embedded, resumed, copied, writer.n_shards,
             key["key"])
    dim = writer.arr.shape[1] if writer.arr is not None else dim or 0  # all shards resumed: the partial's D
    # a rank reaches gather only once every shard of its own is written and recorded (an error stops it first)
    writer.finish(out, dim, reported={s for r in per_rank for s in r["shards"]})
    write_index(out, inputs.batches(), key=key)  # a row group at a time
    summary = {"rows": inputs.n, "dim": int(dim), "embedded": embedded, "reused": reused,
               "resumed": int(resumed), "shards": writer.n_shards, "shards_copied": copied, "seconds": seconds,
               "samples_per_s": embedded / seconds if embedded else 0.0, "device": str(device),
               "key": key["key"], "ranks": world, "per_rank": per_rank, **runtime}
    write_json(out / "summary.json", summary)
    write_params(out, source=src, backbone=cfg, embed=e)
    finish_distributed()
    return summary
