"""Heads on the cached default embeddings: fit time and test metrics of every head kind and backend.

Reads the embedding caches that `dvc repro` wrote (artifacts/embeddings/<source>), fits each head exactly as
the head stage does (train to fit, valid for Platt calibration / C choice), and prints one row per
(features, head, backend): fit rows, fit seconds, ratio against the MLP head on the same features (the
baseline, run first in this process), and test accuracy / ROC-AUC / log loss. Backends: scikit-learn,
scikit-learn-intelex when installed, cuML when a GPU and cuML are present.

`--folds 5` adds k-fold SVMs and compares them like for like, each pair on the same labelled rows:
- `svm <k>f t+v` (k-fold on train + valid, as `folds: 5` in the head stage) against `svm t+v cv`: one SVM fit
  on the same train + valid rows, Platt-calibrated on its own 5-fold cross-fitted margins (`calibration: cv`);
- `svm <k>f t` (k-fold on the train rows only) against the single SVM of the head stage (`svm`, fit on train,
  Platt-calibrated on valid: it sees the valid labels through its calibrator only).
Each pair's test accuracy difference gets a paired bootstrap 95% interval and an exact McNemar p-value
(pipeline.ensemble.blend.versus_best, 2,000 resamples). The k-fold rows also print their OOF accuracy.

`--parallel` instead times a k-fold SVM with a C grid (`--folds` x `--grid` independent fits, as the head
stage runs them) on the first feature set with `n_jobs` 1 against every core, for each backend, and checks
that both give the same OOF scores bit for bit.

    python benchmarks/heads.py [--features minilm_ft minilm_pt both] [--folds 5] [--out results.json]
    python benchmarks/heads.py --parallel --features minilm_ft --folds 3 --grid 1 3
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np

from pipeline import paths
from pipeline.cache.store import read_features
from pipeline.data.load import read_prepared
from pipeline.ensemble.blend import versus_best
from pipeline.heads.estimators import Head, cuml_available, fit_head, resolve_backend
from pipeline.heads.fit import feature_folders
from pipeline.heads.folds import fit_folded
from pipeline.params import HeadParams, load_params

KINDS = {"mlp": {}, "svm": {}, "logistic": {}, "ridge": {}, "knn": {}}


def backends() -> list[str]:
    out = ["sklearn"]
    try:
        import sklearnex  # noqa: F401
        out.append("sklearnex")
    except ImportError:
        pass
    return out + (["cuml"] if cuml_available() else [])


def parallel(params, labels, task, feats: str, k: int, grid: list[float]) -> None:
    """k-fold SVM with a C grid on train + valid: n_jobs 1 against every core, per backend (warmed once)."""
    X, index = read_features(feature_folders(params, feats), labels)
    y = task.encode(index["label"])
    dev = (index["split"] != "test").to_numpy()
    cores = os.cpu_count() or 1
    print(f"{feats}: {k} folds x C {grid} = {k * len(grid)} fits on {int(dev.sum())} rows, {cores} cores")
    print(f"{'backend':10} {'n_jobs 1 s':>10} {'n_jobs ' + str(cores) + ' s':>10} {'speedup':>8}  OOF equal")
    for backend in backends():
        fit_folded(HeadParams(kind="svm", backend=backend), task, X[dev][:2000], y[dev][:2000], 2, params.seed)
        t, oof = {}, {}
        for jobs in (1, cores):
            cfg = HeadParams(kind="svm", backend=backend, C_grid=grid, n_jobs=jobs)
            t0 = time.perf_counter()
            _, oof[jobs], _ = fit_folded(cfg, task, X[dev], y[dev], k, params.seed)
            t[jobs] = time.perf_counter() - t0
        print(f"{backend:10} {t[1]:10.2f} {t[cores]:10.2f} {t[1] / t[cores]:7.2f}x  "
              f"{np.array_equal(oof[1], oof[cores])}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", nargs="+", default=["minilm_ft", "minilm_pt", "both"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--parallel", action="store_true", help="time n_jobs 1 against every core (see above)")
    ap.add_argument("--grid", nargs="+", type=float, default=[1.0, 3.0])
    ap.add_argument("--out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params()
    labels, task = read_prepared(paths.DATA)
    if args.parallel:
        return parallel(params, labels, task, args.features[0], args.folds, args.grid)
    rows, pairs = [], []
    print(f"{'features':10} {'head':11} {'backend':10} {'rows':>6} {'fit s':>7} {'vs mlp':>7} {'acc':>7} {'auc':>7} "
          f"{'logloss':>8}")
    for feats in args.features:
        X, index = read_features(feature_folders(params, feats), labels)
        y = task.encode(index["label"])
        sel = {s: (index["split"] == s).to_numpy() for s in ("train", "valid", "test")}
        Xte, yte = X[sel["test"]], y[sel["test"]]
        base, scores = None, {}

        def record(head: str, backend: str, n: int, fit_s: float, s, **extra) -> None:
            nonlocal base
            m = task.metrics(yte, s)
            base = base or fit_s
            scores[head, backend] = s
            rows.append(dict(features=feats, head=head, backend=backend, fit_rows=n, fit_s=fit_s, **m, **extra))
            print(f"{feats:10} {head:11} {backend:10} {n:6d} {fit_s:7.2f} {fit_s / base:6.2f}x {m['accuracy']:7.4f} "
                  f"{m['roc_auc']:7.4f} {m['log_loss']:8.4f}"
                  + (f"  (OOF acc {extra['oof_accuracy']:.4f})" if extra else ""), flush=True)

        for kind in KINDS:
            for backend in (["sklearn"] if kind == "mlp" else backends()):
                cfg = HeadParams(kind=kind, backend=backend)
                t0 = time.perf_counter()
                head, _ = fit_head(cfg, task, X[sel["train"]], y[sel["train"]], X[sel["valid"]], y[sel["valid"]])
                record(kind, backend, int(sel["train"].sum()), time.perf_counter() - t0, head.scores(Xte))
        if not args.folds:
            continue
        svm, backend, k = HeadParams(kind="svm"), resolve_backend("auto"), args.folds
        for rows_name, fit in (("t+v", sel["train"] | sel["valid"]), ("t", sel["train"])):
            t0 = time.perf_counter()
            head, oof, _ = fit_folded(svm, task, X[fit], y[fit], k, params.seed)
            record(f"svm {k}f {rows_name}", backend, int(fit.sum()), time.perf_counter() - t0, head.scores(Xte),
                   oof_accuracy=task.metrics(y[fit], oof)["accuracy"])
        dev = sel["train"] | sel["valid"]
        t0 = time.perf_counter()
        head = Head(svm.model_copy(update={"calibration": "cv"}), task, backend, svm.C).fit(X[dev], y[dev])
        record("svm t+v cv", backend, int(dev.sum()), time.perf_counter() - t0, head.scores(Xte))
        for folded, single in ((f"svm {k}f t+v", "svm t+v cv"), (f"svm {k}f t", "svm")):
            vs = versus_best(task, "accuracy", yte, scores[folded, backend], {single: scores[single, backend]},
                             seed=params.seed)
            pairs.append(dict(features=feats, folded=folded, single=single, **vs))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "pairs": pairs}, f, indent=1)
    print(f"\n{'features':10} {'k-fold':11} {'single':11} {'acc k-fold':>10} {'acc single':>10} {'diff pt':>8} "
          f"{'95% interval pt':>16} {'McNemar p':>9}")
    for p in pairs:
        print(f"{p['features']:10} {p['folded']:11} {p['single']:11} {p['blend_value']:10.4f} "
              f"{p['member_value']:10.4f} {100 * p['delta']:+8.2f} "
              f"{100 * p['ci95_low']:+7.2f}..{100 * p['ci95_high']:+.2f} {p['p_mcnemar']:9.3f}")


if __name__ == "__main__":
    main()
