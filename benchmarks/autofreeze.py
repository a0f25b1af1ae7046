"""AutoFreeze: full fine-tuning vs AutoFreeze vs AutoFreeze + activation cache, one process, same data,
epochs, seed and params (the defaults in params.yaml, default data).

Prints per run: end-to-end wall time of the fine-tune (including cache building and evaluation), the
speedup against full fine-tuning, the frozen units at the end, and valid / test accuracy.

    python benchmarks/autofreeze.py [--epochs 3] [--interval 0.25] [--percentile 50] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from pipeline.devices import pick_device, resolve_precision
from pipeline.models.backbones import make_backbone
from pipeline.data.load import prepare_dataset
from pipeline.models.classifier import Classifier, MLPHead
from pipeline.params import load_params
from pipeline.train.loop import finetune, predict_scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--percentile", type=float, default=50)
    ap.add_argument("--runs", nargs="+", default=["full", "autofreeze", "autofreeze+cache"])
    ap.add_argument("--out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    params = load_params()
    bb, ft = params.backbones["minilm"], params.finetune
    df, task, _ = prepare_dataset(params.data, params.seed)
    parts = {s: df[df["split"] == s] for s in ("train", "valid", "test")}
    device = pick_device()
    precision = resolve_precision(ft.precision, device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} epochs={args.epochs} "
          f"precision={precision} train_rows={len(parts['train'])} interval={args.interval} "
          f"percentile={args.percentile}", flush=True)
    rows, base = [], None
    for run in args.runs:
        torch.manual_seed(params.seed)
        enc = make_backbone(bb)
        model = Classifier(enc, MLPHead(enc.hidden_size, task.n_outputs, ft.hidden, ft.dropout))
        toks = {s: enc.prepare(d["text"]) for s, d in parts.items()}
        ys = {s: task.encode(d["label"]) for s, d in parts.items()}
        cfg = ft.model_copy(update={"epochs": args.epochs, "scheme": "full" if run == "full" else "autofreeze",
                                    "autofreeze_interval": args.interval, "autofreeze_percentile": args.percentile,
                                    "autofreeze_cache": "auto" if run.endswith("cache") else "none"})
        t0 = time.perf_counter()
        hist = finetune(model, task, (toks["train"], ys["train"]), (toks["valid"], ys["valid"]), cfg, params.seed,
                        device)
        wall = time.perf_counter() - t0
        acc = {s: task.metrics(ys[s], predict_scores(model, task, toks[s], 128, device, precision))["accuracy"]
               for s in ("valid", "test")}
        base = base or wall
        rows.append({"run": run, "wall_s": wall, "speedup": base / wall, "frozen_units": hist[-1]["frozen_units"],
                     "valid_accuracy": acc["valid"], "test_accuracy": acc["test"]})
        print(f"{run:18} wall {wall:7.1f}s  speedup {base / wall:5.2f}x  frozen {hist[-1]['frozen_units']}/7  "
              f"valid acc {acc['valid']:.4f}  test acc {acc['test']:.4f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
