"""AutoFreeze against full fine-tuning of the same length and against the 1-epoch default, over several seeds,
every row in one process, on the default data and params.

A run is `<scheme>@<epochs>`: `full@3` (full fine-tuning, 3 epochs), `full@1` (the default params: 1 epoch),
`autofreeze+cache@3` (AutoFreeze with the activation cache), `autofreeze@3` (without it). Each seed runs every
run in turn (seeds interleaved, so a slow spell on a shared host hits all runs alike); the seed sets the head's
initialization, dropout and the batch order. Valid and test are the whole default splits; `--train-rows N`
fine-tunes on a fixed random subset of the train rows (the same rows for every seed and run).

Prints one line per (seed, run): wall time of the fine-tune (cache building and per-epoch evaluation
included), frozen units at the end, valid / test accuracy; then the mean ± sample standard deviation over
seeds of each run's wall time, its speedup against each reference run and its valid / test accuracy deltas
against each reference run (paired by seed, in points), as a markdown table.

    python benchmarks/autofreeze.py [--seeds 42 43 44] [--train-rows 4000] [--interval 0.25] [--percentile 50]
        [--runs full@3 full@1 autofreeze+cache@3] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import torch

from pipeline.data.prepare import prepare_dataset
from pipeline.devices import pick_device, resolve_precision
from pipeline.models.backbones import make_backbone
from pipeline.models.classifier import Classifier, MLPHead
from pipeline.params import load_params
from pipeline.train.loop import finetune, predict_scores

REFS = ("full@3", "full@1")


def parse_run(run: str) -> tuple[str, bool, float]:
    """'autofreeze+cache@3' -> ('autofreeze', True, 3.0)."""
    name, _, epochs = run.partition("@")
    scheme = name.removesuffix("+cache")
    if scheme not in ("full", "autofreeze") or not epochs:
        raise SystemExit(f"run {run!r}: expected full@<epochs>, autofreeze@<epochs> or autofreeze+cache@<epochs>")
    return scheme, name.endswith("+cache"), float(epochs)


def mean_sd(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def summarize(rows: list[dict], refs=REFS) -> list[dict]:
    """Per-seed rows ({seed, run, wall_s, valid_accuracy, test_accuracy}) -> one dict per run: mean and sd
    over seeds of wall_s and accuracies, and for each reference run present, per-seed paired speedup
    (ref wall / run wall) and accuracy deltas (run - ref, in points)."""
    by = {(r["seed"], r["run"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [by[s, run] for s in seeds if (s, run) in by]
        s = {"run": run, "seeds": len(mine)}
        for k in ("wall_s", "valid_accuracy", "test_accuracy"):
            s[k] = mean_sd([r[k] for r in mine])
        for ref in refs:
            pairs = [(by[r["seed"], ref], r) for r in mine if (r["seed"], ref) in by]
            if not pairs:
                continue
            s[f"speedup_vs_{ref}"] = mean_sd([a["wall_s"] / b["wall_s"] for a, b in pairs])
            for split in ("valid", "test"):
                k = f"{split}_accuracy"
                s[f"{split}_delta_vs_{ref}"] = mean_sd([100 * (b[k] - a[k]) for a, b in pairs])
        out.append(s)
    return out


def markdown(summary: list[dict], refs=REFS) -> str:
    pm = lambda v, f: f"{v[0]:{f}} ± {v[1]:{f.lstrip('+')}}"  # noqa: E731
    head = ["run", "wall s"] + [f"speedup vs {r}" for r in refs] + ["valid acc", "test acc"] + \
        [f"{sp} Δ vs {r} (points)" for r in refs for sp in ("valid", "test")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["run"], pm(s["wall_s"], ".1f")]
        cells += [pm(s[f"speedup_vs_{r}"], ".2f") + "x" if f"speedup_vs_{r}" in s else "—" for r in refs]
        cells += [pm(s["valid_accuracy"], ".4f"), pm(s["test_accuracy"], ".4f")]
        cells += [pm(s[f"{sp}_delta_vs_{r}"], "+.2f") if f"{sp}_delta_vs_{r}" in s else "—"
                  for r in refs for sp in ("valid", "test")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=["full@3", "full@1", "autofreeze+cache@3"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    ap.add_argument("--train-rows", type=int, default=0, help="0 = every train row")
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--percentile", type=float, default=50)
    ap.add_argument("--out")
    args = ap.parse_args()
    runs = {r: parse_run(r) for r in args.runs}
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    params = load_params()
    bb, ft = params.backbones["minilm"], params.finetune
    df, task, _ = prepare_dataset(params.data, params.seed)
    parts = {s: df[df["split"] == s] for s in ("train", "valid", "test")}
    if args.train_rows and args.train_rows < len(parts["train"]):
        parts["train"] = parts["train"].sample(args.train_rows, random_state=params.seed)
    device = pick_device()
    precision = resolve_precision(ft.precision, device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} precision={precision} "
          f"rows train/valid/test={'/'.join(str(len(parts[s])) for s in parts)} seeds={args.seeds} "
          f"interval={args.interval} percentile={args.percentile}", flush=True)
    rows = []
    for seed in args.seeds:
        for run, (scheme, cache, epochs) in runs.items():
            torch.manual_seed(seed)
            enc = make_backbone(bb)
            model = Classifier(enc, MLPHead(enc.hidden_size, task.n_outputs, ft.hidden, ft.dropout))
            toks = {s: enc.prepare(d["text"]) for s, d in parts.items()}
            ys = {s: task.encode(d["label"]) for s, d in parts.items()}
            cfg = ft.model_copy(update={"epochs": epochs, "scheme": scheme, "autofreeze_interval": args.interval,
                                        "autofreeze_percentile": args.percentile,
                                        "autofreeze_cache": "auto" if cache else "none"})
            t0 = time.perf_counter()
            hist = finetune(model, task, (toks["train"], ys["train"]), (toks["valid"], ys["valid"]), cfg, seed,
                            device)
            wall = time.perf_counter() - t0
            acc = {s: task.metrics(ys[s], predict_scores(model, task, toks[s], 128, device, precision))["accuracy"]
                   for s in ("valid", "test")}
            frozen = hist[-1].get("frozen_units", 0)
            rows.append({"seed": seed, "run": run, "wall_s": wall, "frozen_units": frozen,
                         "valid_accuracy": acc["valid"], "test_accuracy": acc["test"]})
            print(f"seed {seed}  {run:20} wall {wall:7.1f}s  frozen {frozen}/7  valid acc {acc['valid']:.4f}  "
                  f"test acc {acc['test']:.4f}", flush=True)
    summary = summarize(rows)
    print(markdown(summary), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
