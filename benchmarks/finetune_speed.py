"""Fine-tuning throughput: Hugging Face Trainer with defaults vs our loop, same process, same steps.

baseline: `Trainer` with its defaults (fp32, AdamW, linear schedule) on AutoModelForSequenceClassification,
          texts tokenized tutorial-style with padding="max_length"; batch size, lr and step count set equal.
ours:     `pipeline.train.loop.finetune` (mean pooling + MLP head, BCE), bucketed dynamic padding, foreach/fused
          AdamW, `--precision` autocast (bf16 by default here).
Both train `--steps` steps on the default data; prints train samples/s, the ratio, and valid accuracy
after those steps, so speed is not bought with accuracy.

    python benchmarks/finetune_speed.py [--steps 120] [--rows 6000] [--precision bf16]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from pipeline.devices import pick_device
from pipeline.models.backbones import make_backbone, resolve_model_path
from pipeline.data.batching import tokenize
from pipeline.data.load import prepare_dataset
from pipeline.models.classifier import Classifier, MLPHead
from pipeline.params import load_params
from pipeline.train.loop import finetune, predict_scores


def run_trainer(path, texts, y, vtexts, vy, steps, batch, lr, max_length, seed) -> tuple[float, float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    class DS(torch.utils.data.Dataset):
        def __init__(self, texts, labels):
            self.enc = tok(texts, padding="max_length", truncation=True, max_length=max_length)
            self.labels = labels

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {**{k: torch.tensor(v[i]) for k, v in self.enc.items()}, "labels": int(self.labels[i])}

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
                                 seed=seed, report_to=[], save_strategy="no", logging_strategy="no",
                                 disable_tqdm=True, per_device_eval_batch_size=128)
        trainer = Trainer(model=model, args=args, train_dataset=DS(texts, y))
        t = time.perf_counter()
        trainer.train()
        secs = time.perf_counter() - t
        logits = trainer.predict(DS(vtexts, vy)).predictions
    return steps * batch / secs, float((logits.argmax(1) == vy).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--precision", default="bf16")
    args = ap.parse_args()
    params = load_params()
    bb, ft = params.backbones["minilm"], params.finetune
    df, task, _ = prepare_dataset(params.data.model_copy(update={"max_rows": args.rows}), params.seed)
    tr, va = df[df["split"] == "train"], df[df["split"] == "valid"]
    y_tr, y_va = task.encode(tr["label"]), task.encode(va["label"])
    device = pick_device()

    base_sps, base_acc = run_trainer(resolve_model_path(bb.name), tr["text"].tolist(), y_tr, va["text"].tolist(),
                                     y_va, args.steps, ft.batch_size, ft.lr, bb.max_length, params.seed)

    torch.manual_seed(params.seed)
    enc = make_backbone(bb)
    model = Classifier(enc, MLPHead(enc.hidden_size, 1, ft.hidden, ft.dropout))
    tok_tr, tok_va = tokenize(enc.tokenizer, tr["text"], bb.max_length), tokenize(enc.tokenizer, va["text"], bb.max_length)
    cfg = ft.model_copy(update={"precision": args.precision, "max_steps": args.steps, "epochs": 100,
                                "warmup_frac": 0.0, "schedule": "linear"})
    hist = finetune(model, task, (tok_tr, y_tr), (tok_va, y_va), cfg, params.seed, device)
    ours_sps = hist[-1]["train_samples_per_s"]
    ours_acc = task.metrics(y_va, predict_scores(model, task, tok_va, 128, device, args.precision))["accuracy"]

    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} steps={args.steps} "
          f"batch={ft.batch_size} lr={ft.lr} max_length={bb.max_length} train_rows={len(tr)}")
    print(f"HF Trainer defaults (fp32, fixed pad): {base_sps:7.1f} samples/s   valid acc {base_acc:.4f}")
    print(f"ours ({args.precision}, bucketed, foreach AdamW): {ours_sps:7.1f} samples/s   valid acc {ours_acc:.4f}")
    print(f"speedup {ours_sps / base_sps:.2f}x")


if __name__ == "__main__":
    main()
