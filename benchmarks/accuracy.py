"""Accuracy levers of the default text task (issue 18): one table of valid / test accuracy and seconds per lever.

Every row is a real run of the default recipe with one thing changed, in one process, through the pipeline's
own functions: fine-tune (pipeline.train.loop.finetune), embed every row with the fine-tuned and the
pretrained encoder (bucketed, bf16 as params.yaml asks), heads on the cached features
(pipeline.heads.estimators.fit_head / folds.fit_folded, as the head stage fits them), and the ensemble
(pipeline.ensemble.blend: weights on valid, never on test, the cross-fitted check with its fallback).

Selection is by VALID accuracy. The ensemble's valid accuracy is its cross-fitted value (weights fit on the
other valid folds: crossfit_check), or its best member's when the fallback keeps one member; each member's
valid scores are honest (the MLP never chose anything on valid; SVMs give held-out calibrated scores; k-fold
heads give out-of-fold scores). Test is reported beside it and chooses nothing.

Fine-tunes and embeddings are cached on disk under --cache, keyed by what shapes them (seed, max_length,
epochs, scheme, LP-FT), so rows that differ only in heads or ensemble reuse them, and `--only` runs in parts
add up to one table. The split is always the one of params.yaml's seed; `--seeds` varies the training seed
(head init, dropout, batch order) of the rows, as benchmarks/autofreeze.py does.

Columns: valid / test accuracy of the ensemble and of its best member on valid, and seconds: fine-tune (with
its per-epoch valid pass and the MLP's valid + test predictions), embed (fine-tuned + pretrained passes over
all rows; the pretrained pass is measured once per max_length and charged to every row, as `dvc repro` would
run it), heads, ensemble; `repro s` adds --overhead seconds (DVC and the stages' Python start-ups) as an estimate
of a whole `dvc repro`.

    python benchmarks/accuracy.py [--only default epochs2 ...] [--seeds 42 1 2] [--cache /tmp/accuracy-cache]
        [--train-rows N] [--max-length-cap N] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data.batching import map_batches
from pipeline.data.prepare import prepare_dataset
from pipeline.devices import autocast, pick_device, resolve_precision, seed_everything
from pipeline.ensemble.blend import combine, crossfit_check, fit_weights, objective_loss
from pipeline.heads.estimators import fit_head
from pipeline.heads.folds import fit_folded
from pipeline.heads.mlp import EmbeddingMLP
from pipeline.io import content_hash
from pipeline.models.backbones import make_backbone, pool
from pipeline.models.classifier import Classifier, MLPHead
from pipeline.params import HeadParams, load_params
from pipeline.train.loop import finetune, predict_scores

SPLITS = ("train", "valid", "test")
HEADS = {"svm": HeadParams(kind="svm"), "logistic": HeadParams(kind="logistic"), "knn": HeadParams(kind="knn"),
         "svm5f": HeadParams(kind="svm", folds=5)}
# name -> what changes against the default (params.yaml): finetune overrides, max_length, lpft, heads, the
# feature sets the heads run on, and the ensemble (objective, method, equal = plain mean without weights)
ROWS: dict[str, dict] = {
    "default": {},
    "epochs2": {"ft": {"epochs": 2}},
    "epochs3": {"ft": {"epochs": 3}},
    "autofreeze2": {"ft": {"epochs": 2, "scheme": "autofreeze"}},
    "autofreeze3": {"ft": {"epochs": 3, "scheme": "autofreeze"}},
    "lpft": {"lpft": True},
    "maxlen48": {"max_length": 48},
    "maxlen96": {"max_length": 96},
    "heads+logistic": {"heads": ["svm", "logistic"]},
    "heads+knn": {"heads": ["svm", "knn"]},
    "heads-svm5f": {"heads": ["svm5f"]},
    "heads-all": {"heads": ["svm", "logistic", "knn"]},
    "source+cls": {"features": ["ft", "pt", "both", "ft_cls"]},
    "source+layer3": {"features": ["ft", "pt", "both", "ft_l3"]},
    "ens-primary": {"objective": "primary"},
    "ens-rank": {"method": "rank"},
    "ens-equal": {"equal": True},
    "ens-mlp-only": {"members": ["mlp"]},
}
POOLS = ("ft", "ft_cls", "ft_l3")  # columns of one embedding pass: mean last layer, CLS, mean after block 3


def embed_all(encoder, tok, batch_size: int, precision: str, device) -> np.ndarray:
    """One pass over every row -> (N, 3 * hidden): mean-pooled last layer, CLS token, mean after block 3."""
    encoder.to(device).eval()

    def fn(ids, mask):
        with torch.inference_mode(), autocast(precision, device):
            hs = encoder.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            return torch.cat([pool(hs[-1], mask, "mean"), pool(hs[-1], mask, "cls"), pool(hs[3], mask, "mean")], 1)
    return map_batches(fn, tok, batch_size, device)


class Runner:
    """Fine-tunes and embeddings for the rows, each computed once and kept in `cache` (npz per key)."""

    def __init__(self, cache: Path, train_rows: int = 0, max_length_cap: int = 0):
        self.params = load_params()
        self.cache, self.cap = cache, max_length_cap
        cache.mkdir(parents=True, exist_ok=True)
        self.df, self.task, _ = prepare_dataset(self.params.data, self.params.seed)
        if train_rows:
            tr = self.df[self.df["split"] == "train"]
            drop = tr.index.difference(tr.sample(min(train_rows, len(tr)), random_state=0).index)
            self.df = self.df.drop(drop).reset_index(drop=True)
        self.sel = {s: (self.df["split"] == s).to_numpy() for s in SPLITS}
        self.y = self.task.encode(self.df["label"])
        self.device = pick_device()
        self.key_extra = [len(self.df), self.params.seed]

    def backbone(self, max_length: int | None):
        bb = self.params.backbones["minilm"]
        ml = max_length or bb.max_length
        return bb.model_copy(update={"max_length": min(ml, self.cap) if self.cap else ml})

    def _cached(self, name: str, key, compute) -> dict:
        f = self.cache / f"{name}-{content_hash(key + self.key_extra)}.npz"
        if f.exists():
            return dict(np.load(f))
        out = compute()
        np.savez(f, **out)
        return out

    def pretrained(self, max_length: int | None) -> dict:
        bb = self.backbone(max_length)

        def compute():
            enc = make_backbone(bb)
            tok = enc.prepare(self.df["text"])
            t0 = time.perf_counter()
            X = embed_all(enc, tok, self.params.embed.batch_size, self._embed_precision(), self.device)
            return {"X": X, "embed_s": np.float64(time.perf_counter() - t0)}
        return self._cached("pt", [bb.model_dump()], compute)

    def _embed_precision(self) -> str:
        return resolve_precision(self.params.embed.precision, self.device)

    def finetuned(self, spec: dict, seed: int) -> dict:
        """-> {X (N, 3H) embeddings of every row, mlp (N, 1) scores of the fine-tuned model, seconds}."""
        bb = self.backbone(spec.get("max_length"))
        ft = self.params.finetune.model_copy(update=spec.get("ft", {}))
        lpft = bool(spec.get("lpft"))

        def compute():
            pt = self.pretrained(spec.get("max_length")) if lpft else None
            seed_everything(seed)
            enc = make_backbone(bb)
            head = MLPHead(enc.hidden_size, self.task.n_outputs, ft.hidden, ft.dropout)
            t0 = time.perf_counter()
            if lpft:  # LP-FT: the head starts from a probe trained on the frozen (pretrained) embeddings
                H = enc.hidden_size
                probe = EmbeddingMLP(self.task, ft.hidden, ft.dropout, epochs=10, seed=seed).fit(
                    pt["X"][self.sel["train"], :H], self.y[self.sel["train"]],
                    pt["X"][self.sel["valid"], :H], self.y[self.sel["valid"]])
                head.load_state_dict(probe.net.state_dict())
            model = Classifier(enc, head)
            tok = enc.prepare(self.df["text"])
            part = {s: tok.subset(np.flatnonzero(self.sel[s])) for s in SPLITS}
            hist = finetune(model, self.task, (part["train"], self.y[self.sel["train"]]),
                            (part["valid"], self.y[self.sel["valid"]]), ft, seed, self.device)
            prec = resolve_precision(ft.precision, self.device)
            mlp = predict_scores(model, self.task, tok, ft.eval_batch_size, self.device, prec)
            ft_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            X = embed_all(enc, tok, self.params.embed.batch_size, self._embed_precision(), self.device)
            return {"X": X, "mlp": mlp, "finetune_s": np.float64(ft_s), "embed_s": np.float64(time.perf_counter() - t0),
                    "frozen_units": np.int64(hist[-1].get("frozen_units", 0))}
        return self._cached("ft", [seed, bb.model_dump(), ft.model_dump(), lpft], compute)


def features(ft: dict, pt: dict, name: str) -> np.ndarray:
    H = ft["X"].shape[1] // len(POOLS)
    cols = {p: ft["X"][:, i * H:(i + 1) * H] for i, p in enumerate(POOLS)}
    cols["pt"] = pt["X"][:, :H]
    cols["both"] = np.hstack([cols["ft"], cols["pt"]])
    return cols[name]


def fit_member(r: Runner, kind: str, X: np.ndarray, seed: int) -> np.ndarray:
    """Valid + test scores (N_valid + N_test, K) of one head, valid ones held out as the head stage writes them."""
    cfg, s, y = HEADS[kind], r.sel, r.y
    if cfg.folds:
        dev = s["train"] | s["valid"]
        head, oof, _ = fit_folded(cfg, r.task, X[dev], y[dev], cfg.folds, seed)
        return np.vstack([oof[s["valid"][dev]], head.scores(X[s["test"]])])
    head, _ = fit_head(cfg, r.task, X[s["train"]], y[s["train"]], X[s["valid"]], y[s["valid"]])
    return np.vstack([head.heldout_scores(X[s["valid"]], y[s["valid"]]), head.scores(X[s["test"]])])


def run_row(r: Runner, name: str, spec: dict, seed: int, overhead: float) -> dict:
    """One lever row for one training seed -> its accuracies, weights and seconds."""
    ft, pt = r.finetuned(spec, seed), r.pretrained(spec.get("max_length"))
    ev = np.concatenate([np.flatnonzero(r.sel["valid"]), np.flatnonzero(r.sel["test"])])  # valid rows, then test
    n_va = int(r.sel["valid"].sum())
    members = {"mlp": ft["mlp"][ev]}
    t0 = time.perf_counter()
    if spec.get("members") != ["mlp"]:
        for feats in spec.get("features", ["ft", "pt", "both"]):
            X = features(ft, pt, feats)
            for kind in spec.get("heads", ["svm"]):
                members[f"{feats}-{kind}"] = fit_member(r, kind, X, seed)
    heads_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    y = r.y[ev]
    y_va, y_te = y[:n_va], y[n_va:]
    names, S = list(members), list(members.values())
    acc = lambda yy, s: r.task.metrics(yy, s)["accuracy"]  # noqa: E731
    member_valid = {n: acc(y_va, m[:n_va]) for n, m in members.items()}
    best = max(member_valid, key=member_valid.get)
    method, p = spec.get("method", "mean"), r.params.ensemble
    if spec.get("equal") or len(S) == 1:
        w, valid_acc = np.full(len(S), 1 / len(S)), acc(y_va, combine([m[:n_va] for m in S], np.full(len(S), 1 / len(S))))
    else:
        loss = objective_loss(r.task, spec.get("objective", p.objective), "accuracy", method)
        w, _ = fit_weights(r.task, y_va, [m[:n_va] for m in S], p.grid_step, method, loss)
        if method == "mean":
            check = crossfit_check(r.task, y_va, [m[:n_va] for m in S], names, p.grid_step, method, loss,
                                   "accuracy", seed=r.params.seed)
            valid_acc = check["blend"]
            if p.fallback and check["gain"] < 0:
                w, valid_acc = np.array([float(n == check["best_member"]) for n in names]), check["best_member_value"]
        else:  # rank averages have no probability scale: no cross-fitted check, in-sample valid value
            valid_acc = acc(y_va, combine([m[:n_va] for m in S], w, method))
    blend_te = combine([m[n_va:] for m in S], w, method)
    test_acc = float(np.mean(r.task.hard(blend_te) == y_te)) if method == "rank" else acc(y_te, blend_te)
    ens_s = time.perf_counter() - t0
    embed_s = float(ft["embed_s"] + pt["embed_s"])
    total = float(ft["finetune_s"]) + embed_s + heads_s + ens_s
    return {"row": name, "seed": seed, "valid_acc": float(valid_acc), "test_acc": float(test_acc),
            "best_member": best, "best_member_valid": member_valid[best],
            "best_member_test": acc(y_te, members[best][n_va:]), "mlp_valid": member_valid["mlp"],
            "mlp_test": acc(y_te, members["mlp"][n_va:]), "weights": dict(zip(names, map(float, w))),
            "members": {n: [member_valid[n], acc(y_te, m[n_va:])] for n, m in members.items()},
            "finetune_s": float(ft["finetune_s"]), "embed_s": embed_s, "heads_s": heads_s, "ensemble_s": ens_s,
            "frozen_units": int(ft["frozen_units"]), "repro_s": total + overhead}


def markdown(rows: list[dict]) -> str:
    """Rows (one per row and seed) -> a table: mean over seeds, min..max where there are several."""
    head = ["row", "seeds", "valid acc", "test acc", "best member (valid / test)", "fine-tune s", "embed s",
            "heads s", "repro s (est.)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(r["row"] for r in rows):
        rs = [r for r in rows if r["row"] == name]

        def cell(k, f=".4f"):
            v = np.array([r[k] for r in rs])
            return f"{v.mean():{f}}" + (f" ({v.min():{f}}..{v.max():{f}})" if len(v) > 1 else "")
        lines.append("| " + " | ".join([
            name, str(len(rs)), cell("valid_acc"), cell("test_acc"),
            f"{rs[0]['best_member']} {cell('best_member_valid')} / {cell('best_member_test')}",
            cell("finetune_s", ".0f"), cell("embed_s", ".0f"), cell("heads_s", ".0f"), cell("repro_s", ".0f")]) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (default: params.yaml's)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/accuracy-cache"))
    ap.add_argument("--train-rows", type=int, default=0, help="0 = every train row (tests: a few hundred)")
    ap.add_argument("--max-length-cap", type=int, default=0, help="caps max_length (tests)")
    ap.add_argument("--overhead", type=float, default=50.0, help="seconds of DVC and stage start-ups")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    r = Runner(args.cache, args.train_rows, args.max_length_cap)
    seeds = args.seeds or [r.params.seed]
    print(f"rows train/valid/test={'/'.join(str(int(r.sel[s].sum())) for s in SPLITS)} seeds={seeds} "
          f"threads={torch.get_num_threads()}", flush=True)
    rows = []
    for seed in seeds:
        for name in args.only:
            t0 = time.perf_counter()
            row = run_row(r, name, ROWS[name], seed, args.overhead)
            rows.append(row)
            print(f"{name:15} seed {seed:3d}  valid {row['valid_acc']:.4f}  test {row['test_acc']:.4f}  "
                  f"best {row['best_member']} {row['best_member_valid']:.4f}/{row['best_member_test']:.4f}  "
                  f"ft {row['finetune_s']:.0f}s embed {row['embed_s']:.0f}s heads {row['heads_s']:.0f}s "
                  f"({time.perf_counter() - t0:.0f}s here)", flush=True)
            if args.out:  # after every row: a run cut short keeps what it measured
                args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                               indent=1))
    print(markdown(rows), flush=True)


if __name__ == "__main__":
    main()
