"""Fits kept by content: the head stage's per-feature-set reuse (pipeline/heads/fit.py).

A fit of head H on feature set F is keyed by `fingerprint`: the sha256 of everything that shapes it, namely
H's params, `seed` (the k-fold assignment), the backend it resolves to here and the versions of the libraries
that fit it, for each part of F in order its source kind (a fine-tuned source writes no train OOF rows) and
the files its fit reads (`vectors.zarr`, `index.parquet`, `key.json`; not the store's timings or params
record), the labels (`dataset.parquet`, `task.json`), and the source files of the `pipeline` package.

The fits live in `.cache/heads/<key>/` (outside DVC and git, like a compiler cache): `put` copies a finished
fit there with the sha256 of each of its files, `restore` copies an entry only when every file still matches
(a changed or truncated file means a refit, never a reuse). The `KEEP` most recently used entries stay.
DVC's own run cache still restores a whole head stage whose inputs it has seen (the outputs are not
`persist`), so both a revisited `C` and a new fine-tune (the pretrained features' fit reused) cost no fit.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
from pathlib import Path

import pipeline
from pipeline import paths
from pipeline.heads.estimators import resolve_backend
from pipeline.io import files_sha256, params_record, read_json, write_json
from pipeline.params import Params

log = logging.getLogger(__name__)
INPUTS = "inputs.json"
KEEP = 32  # fits kept in the cache; the least recently used go first
LIBRARIES = ("scikit-learn", "scikit-learn-intelex", "cuml", "cuml-cu12", "torch", "numpy")
STORE_FILES = ("vectors.zarr/", "index.parquet", "key.json")
DATA_FILES = ("dataset.parquet", "task.json")


def code_sha() -> str:
    """sha256 of the pipeline package's source files: a code change never reuses a fit made by other code."""
    root = Path(pipeline.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _versions() -> dict[str, str | None]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _selected(names: tuple[str, ...]):
    return lambda rel: any(rel == n or (n.endswith("/") and rel.startswith(n)) for n in names)


def fingerprint(params: Params, features: str, head_name: str, data_dir: Path, code: str,
                memo: dict[Path, dict] | None = None) -> str:
    """The key of head `head_name`'s fit on `features` (module docstring). `memo`: folder -> its files'
    sha256, so a store shared by several feature sets is read once per stage."""
    memo = {} if memo is None else memo

    def files(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
        if folder not in memo:
            memo[folder] = files_sha256(folder, _selected(names))
        return memo[folder]
    cfg = params.heads[head_name]
    parts = params.concat.get(features, [features])
    record = {"head": params_record(head=cfg), "seed": params.seed, "code": code,
              "backend": resolve_backend(cfg.backend), "versions": _versions(),
              "features": [[p, params.sources[p].from_, files(paths.embeddings(p), STORE_FILES)] for p in parts],
              "data": files(Path(data_dir), DATA_FILES)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def restore(key: str, dst: Path, cache: Path = paths.HEAD_CACHE) -> bool:
    """Copy the cached fit under `key` to `dst` if every file it recorded is there unchanged -> whether it did.
    Any failure (no entry, a changed file, an entry evicted by another process mid-copy) is False: a refit."""
    entry = Path(cache) / key
    try:
        rec = read_json(entry / INPUTS)
        ok = rec["key"] == key and files_sha256(entry, lambda rel: rel != INPUTS) == rec["files"]
        if not ok:
            log.warning("%s: a cached fit whose files changed: fitting again", entry)
            return False
        shutil.copytree(entry, dst)
        os.utime(entry)  # most recently used
        return True
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(dst, ignore_errors=True)
        return False


def put(key: str, fit: Path, cache: Path = paths.HEAD_CACHE) -> None:
    """Record `fit` (a feature set's finished folder) under `key`: writes its inputs.json (key and the sha256
    of every file) into `fit`, copies it into the cache atomically, and keeps the KEEP newest entries."""
    write_json(fit / INPUTS, {"key": key, "files": files_sha256(fit, lambda rel: rel != INPUTS)})
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(fit, tmp)
    shutil.rmtree(cache / key, ignore_errors=True)
    try:
        tmp.rename(cache / key)
    except OSError:  # another process stored the same key meanwhile: the same fit, keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    entries = sorted((d for d in cache.iterdir() if d.is_dir() and not d.name.startswith(".")),
                     key=lambda d: d.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
