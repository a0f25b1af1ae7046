"""Atomic artifact folders and small file helpers.

Every stage writes its outputs into `<out>.tmp-<pid>` and renames it over `<out>` only when complete, so a
stage killed at any point leaves no folder that DVC would cache as a valid output.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import yaml


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `out`; on success replace `out` with it, on error delete it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    for stale in out.parent.glob(f"{out.name}.tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        # rename the old folder away first: rename() cannot replace a non-empty directory.
        old = out.with_name(f"{out.name}.tmp-old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_params(folder: str | Path, **sections: Any) -> None:
    """Record the resolved params that made an artifact (`params.yaml` inside the folder)."""
    plain = {k: (v.model_dump(by_alias=True) if hasattr(v, "model_dump") else v) for k, v in sections.items()}
    Path(folder, "params.yaml").write_text(yaml.safe_dump(plain, sort_keys=True))


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def content_hash(obj: Any) -> str:
    """Short stable hash of a JSON-able object (params sections, ids)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
