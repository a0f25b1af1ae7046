"""Compare fine-tuning schemes with DVC experiments and print one table.

Queues one `dvc exp run --queue -S ... finetune@minilm` per scheme, runs the queue one at a time, then reads
`dvc exp show --json` (params and the DVCLive summary dvclive/finetune-minilm/metrics.json) into a table:
scheme, adapter, schedule, valid loss, valid accuracy, train samples/s, wall time.

    python benchmarks/sweep.py [--max-steps 150] [--only NAME ...]     (from the repo root, venv on PATH)

The same by hand:
    dvc exp run --queue -n lora -S finetune.scheme=lora -S finetune.lr=1e-3 finetune@minilm
    dvc queue start -j 1 ; dvc queue status ; dvc exp show --only-changed
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time

# name -> (-S overrides, adapter?, schedule label). lrs follow common practice for each scheme.
SCHEMES: dict[str, tuple[dict, str, str]] = {
    "fixed-probe": ({"finetune.scheme": "freeze"}, "no", "cosine"),
    "full-adamw": ({}, "no", "cosine"),
    "nesterov-sgd": ({"finetune.optimizer": "sgd", "finetune.lr": 1e-2, "finetune.head_lr": 1e-2}, "no", "cosine"),
    "differential": ({"finetune.layer_decay": 0.8, "finetune.lr": 2e-4}, "no", "cosine"),
    "gradual-unfreeze": ({"finetune.scheme": "gradual", "finetune.unfreeze_every": 20}, "no", "cosine"),
    "full-stlr": ({"finetune.schedule": "slanted_triangular"}, "no", "slanted_triangular"),
    "full-onecycle": ({"finetune.schedule": "one_cycle"}, "no", "one_cycle"),
    "full-cyclic": ({"finetune.schedule": "cyclic"}, "no", "cyclic"),
    "lora": ({"finetune.scheme": "lora", "finetune.lr": 1e-3}, "LoRA r16", "cosine"),
    "houlsby": ({"finetune.scheme": "adapter", "finetune.lr": 1e-3}, "Houlsby 16", "cosine"),
    "houlsby-stlr": ({"finetune.scheme": "adapter", "finetune.lr": 1e-3,
                      "finetune.schedule": "slanted_triangular"}, "Houlsby 16", "slanted_triangular"),
}
METRICS = "dvclive/finetune-minilm/metrics.json"


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def find(obj, name: str):
    """The experiment record named `name` anywhere in `dvc exp show --json` output."""
    if isinstance(obj, dict):
        if obj.get("name") == name and "data" in obj:
            return obj
        obj = list(obj.values())
    if isinstance(obj, list):
        for x in obj:
            hit = find(x, name)
            if hit:
                return hit
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-steps", type=int, default=150)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    names = args.only or list(SCHEMES)
    stamp = time.strftime("%H%M%S")
    for n in names:
        sets = {**SCHEMES[n][0], "finetune.max_steps": args.max_steps}
        cmd = ["dvc", "exp", "run", "--queue", "-n", f"{n}-{stamp}", "finetune@minilm"]
        for k, v in sets.items():
            cmd += ["-S", f"{k}={v}"]
        sh(*cmd)
    sh("dvc", "queue", "start", "-j", "1")
    while True:
        status = sh("dvc", "queue", "status")
        if not any(w in status for w in ("Queued", "Running")):
            break
        time.sleep(10)
    data = json.loads(sh("dvc", "exp", "show", "--json"))
    rows = []
    for n in names:
        rec = find(data, f"{n}-{stamp}")
        m = (((rec or {}).get("data") or {}).get("metrics") or {}).get(METRICS, {}).get("data", {})
        if not m:
            rows.append((n, SCHEMES[n][1], SCHEMES[n][2], "failed", "", "", ""))
            continue
        rows.append((n, SCHEMES[n][1], SCHEMES[n][2], f"{m['valid']['log_loss']:.4f}",
                     f"{m['valid']['accuracy']:.4f}", f"{m['train']['samples_per_s']:.1f}", f"{m['seconds']:.0f}"))
    print("| scheme | adapter | schedule | valid loss | valid accuracy | train samples/s | wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
