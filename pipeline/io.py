"""Atomic artifact folders and small file helpers.

Every stage writes its outputs into `artifacts/.tmp/<name>.tmp-<pid>` and renames it to `<out>` only when
complete, so a stage killed at any point leaves no folder that DVC would cache as a valid output.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml


def tmp_root(out: Path) -> Path:
    """Where temporary folders for `out` live: `<top>/.tmp`, outside every folder that DVC tracks
    (a leftover inside, say, artifacts/embeddings would change that folder's hash for stages depending on it)."""
    return Path(out.parts[0]) / ".tmp" if len(out.parts) > 1 else out.parent / ".tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success replace `out` with it, on error delete it."""
    out = Path(out)
    root = tmp_root(out)
    # the folders this call creates: removed again, when empty, if the stage fails
    made = [p for p in (*reversed(out.parents), *reversed(root.parents), root) if str(p) != "." and not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    flat = "__".join(out.parts)
    for stale in root.glob(f"{flat}.tmp-*"):  # left by a killed run
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f"{flat}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in sorted(set(made), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty: another stage's, or a nested atomic_dir's
                p.rmdir()
        raise
    if out.exists():
        # move the old folder away first: rename() cannot replace a non-empty directory.
        old = root / f"{flat}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def params_record(**sections: Any) -> dict:
    """Params sections (pydantic models or plain values) -> the plain dict that write_params records."""
    plain = {k: (v.model_dump(by_alias=True) if hasattr(v, "model_dump") else v) for k, v in sections.items()}
    return yaml.safe_load(yaml.safe_dump(plain, sort_keys=True))


def write_params(folder: str | Path, **sections: Any) -> None:
    """Record the resolved params that made an artifact (`params.yaml` inside the folder)."""
    Path(folder, "params.yaml").write_text(yaml.safe_dump(params_record(**sections), sort_keys=True))


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def content_hash(obj: Any) -> str:
    """Short stable hash of a JSON-able object (params sections, ids)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks (weights files can be GBs)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_sha256(folder: str | Path, keep: Callable[[str], bool] = lambda rel: True) -> dict[str, str]:
    """{path relative to `folder` (posix): sha256} of every file under it whose relative path `keep` accepts."""
    folder = Path(folder)
    return {f.relative_to(folder).as_posix(): file_sha256(f) for f in sorted(folder.rglob("*"))
            if f.is_file() and keep(f.relative_to(folder).as_posix())}
