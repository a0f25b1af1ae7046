"""Fine-tuning throughput: two Hugging Face Trainer baselines against our loop, one process, the same steps.

Rows (`--runs`), each from the pretrained weights, `--steps` optimizer steps of `batch_size` rows, the same lr:
- trainer_defaults: `Trainer` with its defaults (fp32, fused AdamW, linear schedule) on
                    AutoModelForSequenceClassification, texts tokenized tutorial-style with padding="max_length";
- trainer_tuned:    the same plus what a practitioner sets: `DataCollatorWithPadding` (pads each batch to its
                    longest), `train_sampling_strategy="group_by_length"` (transformers 5's name for the
                    `group_by_length=True` of 4.x) and `bf16=True` where the hardware has bf16 units (a GPU,
                    a CPU with AMX/AVX512-BF16; on others bf16 measured 23x slower than fp32);
- ours:             `pipeline.train.loop.finetune` (mean pooling + MLP head, BCE, length-bucketed dynamic
                    padding, `--precision` autocast) with foreach AdamW (`foreach_adamw` below), what the stage
                    ran on CPU before fused AdamW became its CPU default;
- ours_fused:       the loop as the fine-tune stage runs it now, fused AdamW (the Trainer's default too);
- ours_fast:        ours_fused with the embeddings and the lowest `--freeze-blocks` transformer blocks frozen
                    from the start (`finetune.freeze_bottom`), what the profile pointed at;
- ours_fast_compiled (only when named): ours_fast with `finetune.compile` (torch.compile, dynamic shapes).
Every row is timed the same way: the clock reads at the start of the training loop and at the end of each
optimizer step, and samples/s counts the steps after the first `--warmup-steps` (allocator, oneDNN primitives,
torch.compile; their seconds are printed apart), so model loading, Trainer setup and evaluation are outside
the timed span for all rows. Valid accuracy after the last step shows that
speed is not bought with accuracy. `--seeds` repeats every row per training seed and prints the means.
`--profile` prints a torch.profiler table for each of ours over the 10 steps after the warm-up (the profiler
slows those steps: take the samples/s from a run without it).

    python benchmarks/finetune_speed.py [--steps 120] [--rows 6000] [--seeds 42 1] [--runs ...] [--profile]
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from unittest import mock

import numpy as np
import torch

from pipeline.data.batching import tokenize
from pipeline.data.prepare import prepare_dataset
from pipeline.devices import pick_device, resolve_precision
from pipeline.models.backbones import make_backbone, resolve_model_path
from pipeline.models.classifier import Classifier, MLPHead
from pipeline.params import load_params
from pipeline.train import loop as train_mod
from pipeline.train.loop import finetune, predict_scores

RUNS = ["trainer_defaults", "trainer_tuned", "ours", "ours_fused", "ours_fast"]
OPTIONAL = ["ours_fast_compiled"]  # inductor's CPU compile takes minutes; asked for by name


def tick() -> tuple[float, float]:
    """(wall, CPU time of this process, all threads) at a step's end."""
    return time.perf_counter(), time.process_time()


def speed(ticks: list[tuple[float, float]], batch: int, warmup: int) -> tuple[float, float, float]:
    """`ticks`: the training loop's start, then each step's end. -> (samples/s and CPU s per wall s over the
    steps after the first `warmup`, seconds of those first steps). CPU/wall is about 2 on these 2 cores when
    the run had them to itself (idle OpenMP threads spin), and drops when another process takes a core."""
    (w0, c0), (w1, c1) = ticks[warmup], ticks[-1]
    return (len(ticks) - 1 - warmup) * batch / (w1 - w0), (c1 - c0) / (w1 - w0), w0 - ticks[0][0]


def foreach_adamw(groups, cfg, device) -> torch.optim.Optimizer:
    """The multi-tensor AdamW that pipeline.train.optim.make_optimizer took on CPU until 2026-11-23; it now
    takes the fused kernel there (one kernel per parameter group instead of a dozen passes over every tensor),
    as the Trainer's default `adamw_torch_fused` does."""
    return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)


def run_trainer(tuned: bool, path, texts, y, vtexts, vy, steps, batch, lr, max_length, seed, warmup):
    """-> (samples/s, CPU/wall, warm-up s, valid accuracy) of one Trainer run."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    class DS(torch.utils.data.Dataset):
        def __init__(self, texts, labels):
            self.enc = tok(texts, truncation=True, max_length=max_length,
                           padding=False if tuned else "max_length")
            self.labels = labels

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            item = {k: v[i] for k, v in self.enc.items()} if tuned else \
                {k: torch.tensor(v[i]) for k, v in self.enc.items()}
            return {**item, "labels": int(self.labels[i])}

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[tuple[float, float]] = []

        def on_train_begin(self, args, state, control, **kw):
            self.ends.append(tick())

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(tick())

    clock = Clock()
    # bf16 as a practitioner sets it: where the hardware has bf16 units (what our precision: auto decides)
    bf16 = resolve_precision("auto", pick_device()) == "bf16"
    tuned_kw = dict(bf16=bf16, train_sampling_strategy="group_by_length") if tuned else {}
    tuned_kw["use_cpu"] = not torch.cuda.is_available()  # Trainer refuses bf16=True on CPU without it
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
                                 seed=seed, report_to=[], save_strategy="no", logging_strategy="no",
                                 disable_tqdm=True, per_device_eval_batch_size=128, **tuned_kw)
        trainer = Trainer(model=model, args=args, train_dataset=DS(texts, y), callbacks=[clock],
                          processing_class=tok if tuned else None,
                          data_collator=DataCollatorWithPadding(tok) if tuned else None)
        trainer.train()
        # not `vy`: with group_by_length the Trainer's eval sampler groups by length too, so predictions come
        # back in that order, and label_ids with them
        pred = trainer.predict(DS(vtexts, vy))
    return *speed(clock.ends, batch, warmup), float((pred.predictions.argmax(1) == pred.label_ids).mean())


def run_ours(name: str, bb, ft, task, tr, y_tr, va, y_va, steps, precision, seed, warmup, freeze_blocks,
             profile: bool = False):
    """-> (samples/s, CPU/wall, warm-up s, valid accuracy) of one run of pipeline.train.loop.finetune."""
    device = pick_device()
    precision = resolve_precision(precision, device)
    torch.manual_seed(seed)
    enc = make_backbone(bb)
    model = Classifier(enc, MLPHead(enc.hidden_size, 1, ft.hidden, ft.dropout))
    tok_tr, tok_va = tokenize(enc.tokenizer, tr, bb.max_length), tokenize(enc.tokenizer, va, bb.max_length)
    cfg = ft.model_copy(update={"precision": precision, "max_steps": steps, "epochs": 100,
                                "warmup_frac": 0.0, "schedule": "linear", "compile": name.endswith("compiled"),
                                "freeze_bottom": freeze_blocks if name.startswith("ours_fast") else 0})
    ends = [tick()]
    with (profiled(warmup) if profile else contextlib.nullcontext()) as prof, \
            mock.patch.object(train_mod, "make_optimizer", foreach_adamw) if name == "ours" else contextlib.nullcontext():
        def on_step(*_):
            ends.append(tick())
            if prof:
                prof.step()
        finetune(model, task, (tok_tr, y_tr), (tok_va, y_va), cfg, seed, device, on_step=on_step)
    acc = task.metrics(y_va, predict_scores(model, task, tok_va, 128, device, precision))["accuracy"]
    return *speed(ends, ft.batch_size, warmup), acc


def profiled(warmup: int, n: int = 10):
    """torch.profiler over the `n` steps after the first `warmup`; prints the top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile, schedule

    def show(p):
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))
    return profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=warmup - 1, warmup=1, active=n),
                   on_trace_ready=show)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--precision", default="auto", help="ours: auto = bf16 where the hardware has bf16 units")
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--freeze-blocks", type=int, default=2, help="ours_fast: transformer blocks frozen, bottom up")
    ap.add_argument("--runs", nargs="+", default=RUNS, choices=RUNS + OPTIONAL)
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of each of ours")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="training seeds (init, batch order); each row runs once per seed. Default: params' seed")
    args = ap.parse_args()
    if not 0 < args.warmup_steps < args.steps:
        ap.error("--warmup-steps must be at least 1 and below --steps")
    params = load_params()
    bb, ft = params.backbones["minilm"], params.finetune
    df, task, _ = prepare_dataset(params.data.model_copy(update={"max_rows": args.rows}), params.seed)
    tr, va = df[df["split"] == "train"], df[df["split"] == "valid"]
    y_tr, y_va = task.encode(tr["label"]), task.encode(va["label"])
    texts, vtexts = tr["text"].tolist(), va["text"].tolist()
    print(f"device={pick_device()} torch={torch.__version__} threads={torch.get_num_threads()} steps={args.steps} "
          f"(first {args.warmup_steps} not timed) batch={ft.batch_size} lr={ft.lr} max_length={bb.max_length} "
          f"train_rows={len(tr)} valid_rows={len(va)}", flush=True)
    res: dict[str, list[tuple[float, float, float, float]]] = {}
    for seed in args.seeds or [params.seed]:  # the data split stays params.seed's
        for name in args.runs:
            if name.startswith("trainer"):
                r = run_trainer(name == "trainer_tuned", resolve_model_path(bb.name), texts, y_tr, vtexts, y_va,
                                args.steps, ft.batch_size, ft.lr, bb.max_length, seed, args.warmup_steps)
            else:
                r = run_ours(name, bb, ft, task, texts, y_tr, vtexts, y_va, args.steps,
                             args.precision, seed, args.warmup_steps, args.freeze_blocks, args.profile)
            res.setdefault(name, []).append(r)
            print(f"{name} seed {seed}: {r[0]:.1f} samples/s (CPU/wall {r[1]:.2f}; first {args.warmup_steps} steps "
                  f"{r[2]:.1f} s), valid acc {r[3]:.4f}", flush=True)
    mean = {k: np.mean(v, axis=0) for k, v in res.items()}
    base = [k for k in ("trainer_defaults", "trainer_tuned") if k in res]
    many = len(args.seeds or []) > 1
    head = ("| run | train samples/s |" + "".join(f" vs {k} |" for k in base) + " valid acc | CPU/wall |"
            + f" first {args.warmup_steps} steps s |"
            + " per seed: samples/s, valid acc |" * many)
    print(("\nmeans over seeds " + " ".join(map(str, args.seeds)) if many else "") + "\n" + head + "\n"
          + "|---" * (head.count("|") - 1) + "|")
    for name, (sps, cpu, warm, acc) in mean.items():
        ratios = "".join(f" {sps / mean[k][0]:.2f}x |" for k in base)
        per_seed = (" " + "; ".join(f"{s:.1f}, {a:.4f}" for s, _, _, a in res[name]) + " |") if many else ""
        print(f"| {name} | {sps:.1f} |{ratios} {acc:.4f} | {cpu:.2f} | {warm:.1f} |{per_seed}")

if __name__ == "__main__":
    main()
