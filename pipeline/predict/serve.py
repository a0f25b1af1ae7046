"""Predict on new texts or images with the stored artifacts (fine-tuned/pretrained backbones, heads, ensemble weights).

Nothing is retrained: every ensemble member is recomputed from what the pipeline saved, with the same
precision and storage dtype as in the pipeline, and combined with the weights in artifacts/ensemble.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import PipelineError, paths
from pipeline.devices import pick_device, resolve_precision
from pipeline.data.load import DataError, first_rows, read_prepared, read_table
from pipeline.cache.embed import embed_frame, source_encoder, stored_runtime
from pipeline.ensemble.blend import combine
from pipeline.heads.store import load_head
from pipeline.io import read_json
from pipeline.models.classifier import Classifier, MLPHead
from pipeline.params import Params
from pipeline.models.schemes import load_finetuned_encoder
from pipeline.predict.staleness import check_fresh
from pipeline.train.loop import predict_scores

log = logging.getLogger(__name__)


def _member(params: Params, name: str) -> tuple[str, str]:
    """`<features>-<head>` -> (features, head), matched against the params' names."""
    for f in list(params.sources) + list(params.concat):
        for h in params.heads:
            if name == f"{f}-{h}":
                return f, h
    raise PipelineError(f"ensemble member {name!r} is not a <features>-<head> of params.yaml")


def _warn_if_other_precision(params: Params, source: str, device: torch.device) -> None:
    """precision: auto resolves per machine (bf16 only with bf16 units): new rows embedded here at another
    precision than the cache the heads were fit on are close (cosine 0.99999 on MiniLM), not the same."""
    key = paths.embeddings(source) / "key.json"
    made = read_json(key).get("parts", {}) if key.is_file() else {}
    here = resolve_precision(params.embed.precision, device)
    if made.get("precision") not in (None, here) or made.get("device") not in (None, device.type):
        log.warning("embedding for %s at %s on %s, but its cache was made at %s on %s (embed.precision auto "
                    "resolves per machine): the heads see slightly other vectors than they were fit on", source,
                    here, device.type, made.get("precision"), made.get("device"))


def predict_texts(params: Params, texts: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """-> (ensemble scores (N, K), {member: scores}) for raw texts, or image paths for image backbones."""
    ens = read_json(paths.ENSEMBLE / "weights.json") if (paths.ENSEMBLE / "weights.json").exists() else None
    if ens is None:
        raise PipelineError(f"{paths.ENSEMBLE}/weights.json: not found (run `dvc repro` first)")
    check_fresh(params, list(ens["weights"]), lambda m: _member(params, m))
    _, task = read_prepared(paths.DATA)
    device = pick_device()
    cache: dict[str, np.ndarray] = {}

    def source(name: str) -> np.ndarray:
        if name not in cache:
            _warn_if_other_precision(params, name, device)
            enc, dev = source_encoder(params, name), device
            if params.embed.backend != "torch":
                enc, dev = stored_runtime(params, name, enc), torch.device("cpu")
            X = embed_frame(enc, texts, params.embed, dev)
            cache[name] = X.astype(params.embed.dtype).astype(np.float32)  # what the heads saw in the cache
        return cache[name]

    members = {}
    for name in ens["weights"]:
        if name.startswith("mlp-"):
            bb = name.removeprefix("mlp-")
            cfg, folder = params.backbones[bb], paths.finetune(bb)
            model = Classifier(load_finetuned_encoder(cfg, folder), MLPHead.load(folder / "head.safetensors"))
            model.to(device)
            members[name] = predict_scores(model, task, model.encoder.prepare(texts),
                                           params.finetune.eval_batch_size, device,
                                           resolve_precision(params.finetune.precision, device))
        else:
            features, head = _member(params, name)
            X = np.hstack([source(p) for p in params.concat.get(features, [features])])
            members[name] = load_head(paths.head(features, head)).scores(X)
    w = np.array([ens["weights"][m] for m in members])
    return combine(list(members.values()), w, ens.get("method", "mean")), members


def predict_file(params: Params, path: str | Path, out: str | Path, text_column: str | None = None,
                 id_column: str | None = None, image_root: str | None = None) -> pd.DataFrame:
    """Read texts (or image paths, relative to image_root, default the file's folder) from CSV/Parquet/JSONL,
    write id, score_<class> (score for regression), prediction to `out` (.csv or .parquet). Every input is
    checked before any model runs."""
    out = Path(out)
    if out.suffix not in (".csv", ".parquet"):
        raise DataError(f"--out {out}: must end in .csv or .parquet")
    if not out.parent.is_dir():
        raise DataError(f"--out {out}: folder {out.parent} does not exist")
    df = read_table(path)
    if df.empty:
        raise DataError(f"{path}: no rows to predict")
    if id_column and id_column not in df.columns:
        raise DataError(f"{path}: missing --id-column {id_column!r}; columns are {list(df.columns)}")
    images = params.data.modality == "image"
    col = text_column or (params.data.image_column or "image" if images else params.data.text_column)
    if col not in df.columns:
        raise DataError(f"{path}: missing column {col!r}; columns are {list(df.columns)}")
    empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
    if empty.any():
        raise DataError(f"{path}: empty {col} in rows {first_rows(empty)}")
    items = df[col].astype(str).str.strip().tolist()
    if images:
        from pipeline.data.images import refuse_outside, unreadable
        root = Path(image_root) if image_root else Path(path).parent
        items = [str(root / p) for p in items]
        refuse_outside(items, root, str(path))
        missing, broken = unreadable(items)
        if (missing | broken).any():
            files = np.asarray(items)
            raise DataError(f"{path}: missing images in rows {first_rows(missing)} "
                            f"{files[first_rows(missing, 3)].tolist()}, unreadable in rows {first_rows(broken)} "
                            f"{files[first_rows(broken, 3)].tolist()}")
    scores, _ = predict_texts(params, items)
    _, task = read_prepared(paths.DATA)
    res = pd.DataFrame({"id": df[id_column].astype(str) if id_column else df.index.astype(str)})
    for k, name in enumerate(task.score_columns()):
        res[name] = scores[:, k]
    hard = task.hard(scores)
    res["prediction"] = hard if task.kind in ("regression", "multilabel") and hard.ndim == 1 else (
        np.asarray(task.classes)[hard] if task.kind in ("binary", "multiclass") else list(map(list, hard)))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    (res.to_parquet(tmp, index=False) if out.suffix == ".parquet" else res.to_csv(tmp, index=False))
    tmp.replace(out)  # no half-written file if interrupted
    return res
