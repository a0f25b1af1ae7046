"""Stored heads: what the head stage writes and predict reads, in files that cannot run code when read.

`save_head(head, folder)` writes:
- `head.json`: single or k-fold, the head params, the task, the backend, C per fitted head, and the sha256
  of every file below (checked before any of them is read: a changed file is refused, not loaded);
- `estimators.pkl`: numpy arrays and fitted estimators (a sklearnex SVM without its oneDAL model object, which
  repeats the support vectors: `_portable`), read back by an unpickler that only builds an
  allowlist of types (numpy arrays and scalars; scikit-learn, scikit-learn-intelex / oneDAL and cuML
  classes) and calls no other function or class, so a tampered file cannot run code. This is the idea of
  skops' trusted types; skops itself cannot store the oneDAL models inside sklearnex estimators;
- `mlp-<i>.safetensors`: the weights of `kind: mlp` heads (torch is imported for that kind only).

`load_head(folder)` -> a Head or FoldedHead with `scores(X)`, or PipelineError naming the file.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np

from pipeline import PipelineError
from pipeline.io import file_sha256, write_json

FORMAT = 1
ESTIMATORS = "estimators.pkl"
# Packages whose classes (never their functions) a stored head may contain.
_CLASS_PACKAGES = ("sklearn", "sklearnex", "onedal", "daal4py", "cuml", "cupy")
# The few functions pickle needs to rebuild numpy arrays and scikit-learn's neighbour trees.
_FUNCTIONS = {(m, n) for m in ("numpy._core.multiarray", "numpy.core.multiarray") for n in ("_reconstruct", "scalar")} \
    | {("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
       ("sklearn.metrics._dist_metrics", "newObj"), ("sklearn.neighbors._kd_tree", "newObj"),
       ("sklearn.neighbors._ball_tree", "newObj")}


class _AllowlistUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _FUNCTIONS:
            return super().find_class(module, name)
        top = module.split(".")[0]
        if top not in _CLASS_PACKAGES + ("numpy",):
            raise pickle.UnpicklingError(f"{module}.{name} is not an allowed type")
        obj = super().find_class(module, name)
        if top == "numpy":
            # exact ndarray, dtypes and scalar types: not np.memmap, which opens files
            ok = obj is np.ndarray or (isinstance(obj, type) and issubclass(obj, (np.dtype, np.generic)))
        else:
            ok = isinstance(obj, type)
        if not ok:
            raise pickle.UnpicklingError(f"{module}.{name} is not an allowed type")
        return obj


def _members(head) -> list:
    return list(getattr(head, "heads", [head]))


def _portable(model):
    """`model` as pickled. A sklearnex SVC/SVR keeps its support vectors twice: as `support_vectors_` and inside the
    oneDAL model object that its fit returned, which pickles to as many bytes again (the default both-svm at
    C=2: 25.0 MB, 12.5 MB without it). oneDAL rebuilds that object from support_vectors_, dual_coef_ and
    intercept_ on the first predict (onedal/svm/svm.py, `_infer`), with identical scores, so a copy without it
    is stored: half the bytes written, hashed and copied into .cache/heads and DVC's cache on every C tried. Not
    for a multi-class SVC: the object rebuilt from those arrays scores as a binary one (a k-class decision
    function with one column), so it is kept (tests/heads/test_head_store.py)."""
    inner = getattr(model, "_onedal_estimator", None)
    svm = hasattr(inner, "support_vectors_")  # oneDAL's other models (Ridge's) are not rebuilt this way
    if not svm or inner._onedal_model is None or len(getattr(model, "classes_", ())) > 2:
        return model
    lean = copy.copy(model)
    lean._onedal_estimator = copy.copy(inner)
    lean._onedal_estimator._onedal_model = None
    return lean


def save_head(head, folder: str | Path) -> None:
    """Head or FoldedHead -> head.json, estimators.pkl and, for kind mlp, mlp-<i>.safetensors in `folder`."""
    folder = Path(folder)
    members = _members(head)
    mlp = members[0].cfg.kind == "mlp"
    payload = [{"mean": h.mean, "std": h.std, "models": [] if mlp else [_portable(m) for m in h.models],
                "calibrators": h.calibrators} for h in members]
    (folder / ESTIMATORS).write_bytes(pickle.dumps(payload, protocol=5))
    files = [ESTIMATORS]
    if mlp:
        for i, h in enumerate(members):
            h.models[0].net.save(folder / f"mlp-{i}.safetensors")
            files.append(f"mlp-{i}.safetensors")
    write_json(folder / "head.json", {
        "format": FORMAT, "folded": hasattr(head, "heads"), "cfg": members[0].cfg.model_dump(),
        "task": members[0].task.to_dict(), "backend": members[0].backend, "C": [h.C for h in members],
        "files": {f: file_sha256(folder / f) for f in files}})


def load_head(folder: str | Path):
    """Read a head written by save_head, checking every file's sha256 first. -> Head or FoldedHead."""
    from pipeline.heads.folds import FoldedHead
    from pipeline.heads.estimators import Head
    from pipeline.params import HeadParams
    from pipeline.data.tasks import Task

    folder = Path(folder)
    meta_path = folder / "head.json"
    if not meta_path.is_file():
        raise PipelineError(f"{meta_path}: not found (run `dvc repro`)")
    try:
        meta = json.loads(meta_path.read_text())
        files = dict(meta["files"])
    except (ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{meta_path}: not a head description: {e}") from None
    if meta.get("format") != FORMAT or ESTIMATORS not in files:
        raise PipelineError(f"{meta_path}: unknown head format (rerun `dvc repro`)")
    blobs = {}
    for name, sha in files.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise PipelineError(f"{path}: missing (rerun `dvc repro`)")
        blobs[name] = path.read_bytes()
        if hashlib.sha256(blobs[name]).hexdigest() != sha:
            raise PipelineError(f"{path}: sha256 differs from the one recorded in head.json: the file was changed "
                                "after the head stage wrote it; refusing to load it (rerun `dvc repro`)")
    try:
        payload = _AllowlistUnpickler(io.BytesIO(blobs[ESTIMATORS])).load()
    except Exception as e:  # noqa: BLE001 - anything unexpected in the file is a refusal, never a traceback
        raise PipelineError(f"{folder / ESTIMATORS}: refused: {e}") from None
    cfg, task = HeadParams.model_validate(meta["cfg"]), Task(**meta["task"])
    heads = []
    for i, (part, C) in enumerate(zip(payload, meta["C"])):
        h = Head(cfg, task, meta["backend"], C)
        h.mean, h.std, h.models, h.calibrators = part["mean"], part["std"], part["models"], part["calibrators"]
        if cfg.kind == "mlp":
            from pipeline.heads.mlp import EmbeddingMLP
            from pipeline.models.classifier import MLPHead
            mlp = EmbeddingMLP(task)
            mlp.net = MLPHead.load(folder / f"mlp-{i}.safetensors").eval()
            h.models = [mlp]
        heads.append(h)
    return FoldedHead(heads) if meta["folded"] else heads[0]
