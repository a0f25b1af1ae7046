"""Heads on the cached default embeddings: fit time and test metrics of every head kind and backend.

Reads the embedding caches that `dvc repro` wrote (artifacts/embeddings/<source>), fits each head exactly as
the head stage does (train to fit, valid for Platt calibration / C choice), and prints one row per
(features, head, backend): fit seconds, ratio against the MLP head on the same features (the baseline,
run first in this process), and test accuracy / ROC-AUC / log loss. Backends: scikit-learn, scikit-learn-intelex
when installed, cuML when a GPU and cuML are present. `--folds 5` adds the k-fold SVM (OOF on train + valid).

    python benchmarks/heads.py [--features minilm_ft minilm_pt both] [--folds 5] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import time


from pipeline import paths
from pipeline.data.load import read_prepared
from pipeline.heads.folds import fit_folded
from pipeline.heads.estimators import cuml_available, fit_head
from pipeline.heads.fit import feature_folders
from pipeline.params import HeadParams, load_params
from pipeline.cache.store import read_features

KINDS = {"mlp": {}, "svm": {}, "logistic": {}, "ridge": {}, "knn": {}}


def backends() -> list[str]:
    out = ["sklearn"]
    try:
        import sklearnex  # noqa: F401
        out.append("sklearnex")
    except ImportError:
        pass
    return out + (["cuml"] if cuml_available() else [])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", nargs="+", default=["minilm_ft", "minilm_pt", "both"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params()
    labels, task = read_prepared(paths.DATA)
    rows = []
    print(f"{'features':10} {'head':9} {'backend':10} {'fit s':>7} {'vs mlp':>7} {'acc':>7} {'auc':>7} {'logloss':>8}")
    for feats in args.features:
        X, index = read_features(feature_folders(params, feats), labels)
        y = task.encode(index["label"])
        sel = {s: (index["split"] == s).to_numpy() for s in ("train", "valid", "test")}
        base = None
        for kind in KINDS:
            for backend in (["sklearn"] if kind == "mlp" else backends()):
                if backend == "cuml" and kind == "mlp":
                    continue
                cfg = HeadParams(kind=kind, backend=backend)
                t0 = time.perf_counter()
                head, _ = fit_head(cfg, task, X[sel["train"]], y[sel["train"]], X[sel["valid"]], y[sel["valid"]])
                fit_s = time.perf_counter() - t0
                m = task.metrics(y[sel["test"]], head.scores(X[sel["test"]]))
                base = base or fit_s
                rows.append(dict(features=feats, head=kind, backend=backend, fit_s=fit_s, **m))
                print(f"{feats:10} {kind:9} {backend:10} {fit_s:7.2f} {fit_s / base:6.2f}x {m['accuracy']:7.4f} "
                      f"{m['roc_auc']:7.4f} {m['log_loss']:8.4f}", flush=True)
        if args.folds:
            dev = sel["train"] | sel["valid"]
            t0 = time.perf_counter()
            head, oof, rep = fit_folded(HeadParams(kind="svm"), task, X[dev], y[dev], args.folds, params.seed)
            fit_s = time.perf_counter() - t0
            m = task.metrics(y[sel["test"]], head.scores(X[sel["test"]]))
            oof_acc = task.metrics(y[dev], oof)["accuracy"]
            rows.append(dict(features=feats, head=f"svm-{args.folds}fold", backend=rep["backend"], fit_s=fit_s,
                             oof_accuracy=oof_acc, **m))
            print(f"{feats:10} {'svm ' + str(args.folds) + 'f':9} {rep['backend']:10} {fit_s:7.2f} {fit_s / base:6.2f}x "
                  f"{m['accuracy']:7.4f} {m['roc_auc']:7.4f} {m['log_loss']:8.4f}  (OOF acc {oof_acc:.4f})", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
