"""Embedding throughput: baselines and every embedding path of ours, one process, default model and data.

Rows, each timed over the same texts after a warm-up of its own:
- naive:        fixed padding to max_length, fp32, torch.no_grad, input order (the tutorial loop);
- hf padding:   the usual HF loop: `padding=True` per batch (pads to the batch's longest), fp32, input order;
- st:           sentence-transformers' `SentenceTransformer(path).encode(texts, batch_size=...)`, fp32: it sorts
                the texts by length itself, pads per batch, mean-pools and (this model's pipeline has a Normalize
                module) L2-normalizes; `max_seq_length` set to ours (64) so it truncates where we do;
- st_bf16:      the same with `model_kwargs={"torch_dtype": "bfloat16"}` (weights in bf16; its docs list this
                under GPU options, the CPU fast paths there being the ONNX/OpenVINO backends, which need
                optimum, not installed here);
- ours fp32 / ours bf16: the embed stage's torch path (length-sorted batches, dynamic padding, inference_mode,
                autocast at that precision);
- onnx / onnx int8 / openvino / openvino int8: `embed.backend` (pipeline/cache/runtimes.py) on the same bucketed
                batches, the encoder exported once (the export time is printed, not counted).
A run named `NAME@B` (e.g. `onnx_int8@32`) is NAME at batch size B instead of --batch-size, so that each path can
be timed at the batch size that suits it (ONNX Runtime int8 at 32 and at 128: benchmarks/RESULTS.md).
With --repeats R, every run embeds all rows R times, the runs taking turns, and its median pass is reported.
For each: samples/s, the ratio to naive, to hf padding, to st and to the embed stage's default torch path
(`ours_auto`: ours at what `precision: auto` picks on this machine, bf16 with bf16 units, else fp32), the
mean cosine to our fp32 embeddings (cosine ignores the norm, so st's normalized vectors compare directly with our
unnormalized mean pooling), and the test accuracy of the default SVM head (`heads.svm`, fit on train,
calibrated on valid) on that cache, so speed is not bought with accuracy.

    python benchmarks/embed_speed.py [--rows 4000] [--batch-size 128] [--repeats 1]
        [--runs naive hf ours_fp32 onnx_int8@32 ...]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.devices import pick_device, resolve_precision
from pipeline.cache.embed import embed_frame
from pipeline.data.batching import tokenize
from pipeline.data.prepare import prepare_dataset
from pipeline.heads.estimators import fit_head
from pipeline.models.backbones import make_backbone, resolve_model_path
from pipeline.params import load_params

RUNS = ["naive", "hf", "st", "st_bf16", "ours_fp32", "ours_bf16", "onnx", "onnx_int8", "openvino", "openvino_int8"]


def loop(encoder, texts, batch_size, max_length, padding) -> np.ndarray:
    """The baselines: tokenize per batch in input order, fp32, no_grad."""
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            b = encoder.tokenizer(texts[i:i + batch_size], padding=padding, truncation=True,
                                  max_length=max_length, return_tensors="pt")
            out.append(encoder(b["input_ids"], b["attention_mask"]).float().numpy())
    return np.vstack(out)


def run_name(value: str) -> str:
    """argparse type: a name of RUNS, optionally with @<batch size>."""
    name, _, batch = value.partition("@")
    if name not in RUNS or ("@" in value and not (batch.isdigit() and int(batch) > 0)):
        raise argparse.ArgumentTypeError(f"{value!r}: expected one of {RUNS}, optionally @<batch size>")
    return value


def runner(run: str, enc, cfg, max_length: int, tmp: Path, model_path: str):
    """-> (texts -> (N, D) embeddings, export seconds)."""
    cpu = torch.device("cpu")
    name, _, batch = run.partition("@")
    if batch:
        cfg = cfg.model_copy(update={"batch_size": int(batch)})
    if name in ("naive", "hf"):
        pad = "max_length" if name == "naive" else True
        return (lambda t: loop(enc, t, cfg.batch_size, max_length, pad)), 0.0
    if name.startswith("st"):
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(model_path, device="cpu",
                                 model_kwargs={"torch_dtype": "bfloat16"} if name == "st_bf16" else None)
        st.max_seq_length = max_length
        return (lambda t: st.encode(t, batch_size=cfg.batch_size, show_progress_bar=False).astype(np.float32)), 0.0
    if name.startswith("ours"):
        c = cfg.model_copy(update={"precision": name.split("_")[1]})
        return (lambda t: embed_frame(enc, t, c, cpu)), 0.0
    from pipeline.cache.runtimes import RuntimeEncoder, export

    backend, _, q = name.partition("_")
    t0 = time.perf_counter()
    path = export(enc, tmp / run, backend, q or "none")
    rt = RuntimeEncoder(path, backend, enc.tokenizer, max_length)
    return (lambda t: embed_frame(rt, t, cfg, cpu)), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1,
                    help="timed passes per run, the runs taking turns; samples/s of each run's median pass")
    ap.add_argument("--runs", nargs="+", default=RUNS, type=run_name, metavar="RUN")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    params = load_params()
    bb = params.backbones["minilm"]
    df, task, _ = prepare_dataset(params.data.model_copy(update={"max_rows": args.rows}), params.seed)
    texts = df["text"].tolist()
    y = task.encode(df["label"])
    split = df["split"].to_numpy()
    enc = make_backbone(bb).eval()
    cfg = params.embed.model_copy(update={"batch_size": args.batch_size, "backend": "torch"})
    tok = tokenize(enc.tokenizer, texts, bb.max_length)
    print(f"torch={torch.__version__} threads={torch.get_num_threads()} rows={len(texts)} max_length={bb.max_length} "
          f"batch={args.batch_size} mean_tokens={tok.lengths.mean():.1f}")
    names = list(dict.fromkeys(["ours_fp32", *args.runs]))  # fp32 first: the cosine reference; each run once
    results, ref = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        fns, times, out = {}, {n: [] for n in names}, {}
        for name in names:
            fns[name], export_s = runner(name, enc, cfg, bb.max_length, Path(tmp), resolve_model_path(bb.name))
            fns[name](texts[:256])  # warm-up: allocator, kernels, the runtime's first inference
            results[name] = dict(export=export_s)
        # every pass embeds every row; the runs take turns, so that a slower spell of a shared host hits each run
        # alike instead of whichever ran then; the median pass of each run is reported
        for _ in range(args.repeats):
            for name in names:
                t0 = time.perf_counter()
                out[name] = fns[name](texts)
                times[name].append(time.perf_counter() - t0)
        for name in names:
            X = out[name]
            ref = X if ref is None else ref
            cos = float(np.mean(np.sum(X * ref, 1) / np.linalg.norm(X, axis=1) / np.linalg.norm(ref, axis=1)))
            head, _ = fit_head(params.heads["svm"], task, X[split == "train"], y[split == "train"],
                               X[split == "valid"], y[split == "valid"])
            acc = task.metric("accuracy", y[split == "test"], head.scores(X[split == "test"]))
            results[name].update(sps=len(texts) / statistics.median(times[name]), cos=cos, acc=acc,
                                 passes=" ".join(f"{t:.1f}" for t in times[name]))
    auto = f"ours_{resolve_precision('auto', pick_device())}"  # the stage's default on this machine
    base = {k if k != auto else "ours_auto": results[k]["sps"] for k in ("naive", "hf", "st", auto) if k in results}
    head = ("| run | samples/s | " + " | ".join(f"vs {k}" for k in base)
            + " | cosine to ours fp32 | SVM test acc | export s | passes s |")
    print("\n" + head + "\n" + "|---" * (head.count("|") - 1) + "|")
    for name in dict.fromkeys(args.runs):
        r = results[name]
        ratios = " | ".join(f"{r['sps'] / b:.2f}x" for b in base.values())
        print(f"| {name} | {r['sps']:.1f} | {ratios} | {r['cos']:.5f} | {r['acc']:.4f} | {r['export']:.1f} "
              f"| {r['passes']} |")


if __name__ == "__main__":
    main()
