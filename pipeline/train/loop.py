"""The fine-tuning loop: backbone + MLP head, AMP, bucketed batches, schedules, schemes, checkpoint/resume.

`finetune(model, task, train, valid, cfg, seed, device)` trains in place and returns the per-epoch history.
Resuming is exact on CPU: each epoch's batch order comes from a generator seeded by (seed, epoch), and the
checkpoint holds model, optimizer, scheduler, torch RNG state and the step.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from pipeline import paths
from pipeline.devices import (autocast, finish_distributed, init_distributed, is_main, pick_device, resolve_precision,
                              seed_everything, set_tf32)
from pipeline.models.backbones import pretrained_encoder
from pipeline.data.batching import Tokenized, map_batches, train_batches
from pipeline.data.load import input_column, read_prepared
from pipeline.io import content_hash, write_json, write_params
from pipeline.models.classifier import Classifier, MLPHead
from pipeline.train.optim import make_optimizer, param_groups, schedule_fn
from pipeline.train.probe import probe_head
from pipeline.params import FinetuneParams, Params
from pipeline.train.distributed import largest_fitting, memory_probe, shard, wrap
from pipeline.models.autofreeze import AutoFreeze
from pipeline.models.schemes import SCHEMES, Scheme, save_adapted
from pipeline.preds import EVAL_SPLITS, write_preds
from pipeline.data.tasks import Task

log = logging.getLogger(__name__)


def predict_scores(model: Classifier, task: Task, tok: Tokenized, batch_size: int, device: torch.device,
                   precision: str = "fp32") -> np.ndarray:
    """Scores (N, K) for every row (see tasks.py for their meaning), in input order."""
    model.eval()

    def fn(*inputs):
        with autocast(precision, device):
            return model(*inputs)
    logits = map_batches(fn, tok, batch_size, device)
    return task.scores_from_logits(torch.from_numpy(logits))


class Checkpointer:
    """Model weights as safetensors, optimizer/scheduler/RNG/step as a weights_only torch file.

    Each checkpoint is one folder `step-<n>/` holding both files, renamed into place whole, and `latest` names
    the newest one (replaced atomically). A kill at any moment leaves a complete, matching pair: before, a kill
    between two file renames could pair new weights with the previous step's optimizer state."""

    def __init__(self, folder: str | Path | None, every: int):
        self.folder, self.every = (Path(folder) if folder else None), every

    def maybe_save(self, step: int, model, opt, sched, scheme=None) -> None:
        if not self.folder or not self.every or step % self.every:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp, final = self.folder / f"tmp-{step}", self.folder / f"step-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        torch.save({"step": step, "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "rng": torch.get_rng_state(), "scheme": scheme.state_dict() if scheme else {}}, tmp / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        (self.folder / "latest.tmp").write_text(final.name)
        (self.folder / "latest.tmp").replace(self.folder / "latest")
        for old in self.folder.glob("step-*"):  # only after `latest` moved on
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint saved at step %d", step)

    def _latest(self) -> Path | None:
        pointer = self.folder / "latest" if self.folder else None
        if not pointer or not pointer.exists():
            return None
        d = self.folder / pointer.read_text().strip()
        return d if (d / "state.pt").exists() and (d / "model.safetensors").exists() else None

    def maybe_load(self, model, opt, sched, scheme=None) -> int:
        d = self._latest()
        if d is None:
            return 0
        state = torch.load(d / "state.pt", weights_only=True)
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        if scheme:
            scheme.load_state_dict(state.get("scheme", {}))
        log.info("resumed from checkpoint at step %d", state["step"])
        return int(state["step"])


def finetune(model: Classifier, task: Task, train: tuple[Tokenized, np.ndarray],
             valid: tuple[Tokenized, np.ndarray], cfg: FinetuneParams, seed: int, device: torch.device,
             checkpoint_dir: str | Path | None = None, on_epoch=None, on_step=None) -> list[dict]:
    """Train `model` in place. Returns one dict per evaluation: epoch, step, train_loss, valid metrics, speed."""
    seed_everything(seed)
    set_tf32(cfg.tf32)
    rank, world, device = init_distributed(device)
    precision = resolve_precision(cfg.precision, device)
    model.to(device)
    tok, y = train
    target = task.torch_target(y)
    micro, accum = cfg.batch_size, cfg.grad_accum
    if cfg.auto_batch and device.type == "cuda":
        micro, accum = largest_fitting(micro * accum, memory_probe(model, task, tok, y, device,
                                                                    lambda: autocast(precision, device)))
        log.info("auto_batch: micro-batch %d x accumulation %d", micro, accum)
    elif cfg.auto_batch:
        log.info("auto_batch: no GPU memory to probe on %s; batch %d x accumulation %d", device, micro, accum)
    n_batches = math.ceil(len(tok) / micro) // world  # per rank
    steps_per_epoch = math.ceil(n_batches / accum)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    if cfg.max_steps:
        total = min(total, cfg.max_steps)

    scheme = make_scheme(cfg, model, total)
    scheme.setup(tok, device, precision, steps_per_epoch)
    opt = make_optimizer(param_groups(model, cfg), cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule_fn(cfg.schedule, total, cfg.warmup_frac))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    forward = wrap(model, device, world, cfg.scheme)
    forward = torch.compile(forward, dynamic=True) if cfg.compile else forward
    ckpt = Checkpointer(checkpoint_dir, cfg.checkpoint_every)
    step = ckpt.maybe_load(model, opt, sched, scheme)

    log.info("fine-tuning: %d steps (%d per epoch), batch %d x accum %d x %d rank(s), precision %s, scheme %s, "
             "device %s", total, steps_per_epoch, micro, accum, world, precision, cfg.scheme, device)
    history, run_loss, run_n, t_train, seen = [], 0.0, 0, 0.0, 0
    bar = tqdm(total=total, initial=step, desc="finetune", disable=None if rank == 0 else True, mininterval=5)
    epoch_batches: dict[int, list] = {}
    while step < total:
        model.train()
        scheme.on_step(step)  # after train(): schemes put their frozen units back in eval mode (no dropout)
        t0 = time.perf_counter()
        for k in range(accum):
            epoch, pos = divmod(step * accum + k, n_batches)
            if epoch not in epoch_batches:
                # identical on every rank (same seed), then each rank takes its share
                epoch_batches = {epoch: shard(train_batches(tok.lengths, micro, np.random.default_rng([seed, epoch]),
                                                            cfg.bucket), rank, world)}
            idx = epoch_batches[epoch][pos]
            b = scheme.batch(tok, idx, pin=device.type == "cuda")
            with autocast(precision, device):
                logits = scheme.forward(forward, idx, [t.to(device, non_blocking=True) for t in b])
            loss = task.loss(logits, target[idx].to(device)) / accum
            scaler.scale(loss).backward()
            scheme.after_backward()
            run_loss += loss.item() * len(idx) * accum
            run_n += len(idx)
            seen += len(idx)
        if cfg.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        step += 1
        t_train += time.perf_counter() - t0
        bar.update(1)
        if rank == 0:
            ckpt.maybe_save(step, model, opt, sched, scheme)
        if on_step and rank == 0:
            on_step(step, run_loss / max(run_n, 1), opt.param_groups)
        if step % steps_per_epoch == 0 or step == total:
            scores = predict_scores(model, task, valid[0], cfg.eval_batch_size, device, precision)
            row = {"epoch": round(step / steps_per_epoch, 3), "step": step,
                   "train_loss": run_loss / max(run_n, 1), "frozen_units": scheme.frozen,
                   "lr": opt.param_groups[0]["lr"], "train_samples_per_s": seen / max(t_train, 1e-9),
                   **{f"valid_{k}": v for k, v in task.metrics(valid[1], scores).items()}}
            history.append(row)
            log.info("epoch %.2f: %s", row["epoch"], {k: round(v, 4) for k, v in row.items()})
            if on_epoch and rank == 0:
                on_epoch(row)
            run_loss, run_n = 0.0, 0
    bar.close()
    scheme.finish()
    return history


class LiveLogger:
    """DVCLive: train loss/lr every `every` steps, valid metrics per evaluation, a summary at the end.
    `dvcyaml=None`: our dvc.yaml declares the metrics and plots (DVCLive would rewrite it otherwise)."""

    def __init__(self, folder: Path | None, every: int = 10):
        self.live, self.every = None, every
        if folder is not None:
            from dvclive import Live
            self.live = Live(dir=str(folder), dvcyaml=None, save_dvc_exp=False, report=None)

    def step(self, step: int, loss: float, groups) -> None:
        if self.live and step % self.every == 0:
            self.live.step = step
            self.live.log_metric("train/loss", loss)
            self.live.log_metric("train/lr", groups[0]["lr"])
            self.live.next_step()

    def epoch(self, row: dict) -> None:
        if self.live:
            self.live.step = row["step"]
            for k, v in row.items():
                if k.startswith("valid_") or k == "train_samples_per_s":
                    self.live.log_metric(k.replace("valid_", "valid/").replace("train_samples_per_s",
                                                                                 "train/samples_per_s"), v)
            self.live.next_step()

    def end(self, summary: dict) -> None:
        if self.live:
            self.live.summary["seconds"] = summary["seconds"]  # the rest is already in the step metrics
            self.live.make_summary()
            self.live.end()


def run_finetune(params: Params, backbone: str, out: Path, data_dir: Path = paths.DATA,
                 checkpoints: Path = paths.CHECKPOINTS, live_dir: Path | None = None) -> dict:
    """Fine-tune backbone + MLP head. Writes model/ (HF folder), head.safetensors, preds.parquet
    (valid + test scores), history.json (one row per epoch)."""
    cfg, ft = params.backbones[backbone], params.finetune
    df, task = read_prepared(data_dir)
    seed_everything(params.seed)  # the head's init must not depend on what ran before
    device = pick_device()
    encoder = pretrained_encoder(cfg, paths.pretrained(backbone))
    head = MLPHead(encoder.hidden_size, task.n_outputs, ft.hidden, ft.dropout)
    model = Classifier(encoder, head)
    parts = {s: df[df["split"] == s] for s in ("train", *EVAL_SPLITS)}
    toks = {s: encoder.prepare(d[input_column(d)]) for s, d in parts.items()}
    ys = {s: task.encode(d["label"]) for s, d in parts.items()}
    # Checkpoints are keyed by everything that shapes the run, so a changed param never resumes a stale run.
    ckpt = checkpoints / f"{backbone}-{content_hash([params.seed, cfg.model_dump(), ft.model_dump(), len(df)])}"
    t0 = time.perf_counter()
    probe = {}
    if ft.probe_epochs:  # LP-FT: the head starts from a probe fit on the frozen backbone (train/probe.py)
        probe = probe_head(head, encoder, task, (toks["train"], ys["train"]), (toks["valid"], ys["valid"]),
                           ft.probe_epochs, params.seed, device, resolve_precision(ft.precision, device),
                           ft.eval_batch_size)
        log.info("LP-FT probe: %s", probe)
    live = LiveLogger(live_dir if is_main() else None)
    history = finetune(model, task, (toks["train"], ys["train"]), (toks["valid"], ys["valid"]), ft,
                       params.seed, device, checkpoint_dir=ckpt, on_epoch=live.epoch, on_step=live.step)
    seconds = time.perf_counter() - t0
    finish_distributed()
    if not is_main():
        return {"seconds": seconds, "rank": "not main: rank 0 writes the outputs"}
    device = next(model.parameters()).device
    precision = resolve_precision(ft.precision, device)
    scores = {s: predict_scores(model, task, toks[s], ft.eval_batch_size, device, precision) for s in EVAL_SPLITS}
    model.cpu()
    if ft.scheme in ("lora", "adapter"):
        save_adapted(encoder, ft, out)  # only what trained; embed rebuilds the rest from the pretrained backbone
    else:
        encoder.save(out / "model")
    head.save(out / "head.safetensors")
    write_preds(out / "preds.parquet", np.concatenate([parts[s]["id"] for s in EVAL_SPLITS]),
                np.concatenate([parts[s]["split"] for s in EVAL_SPLITS]),
                np.concatenate([scores[s] for s in EVAL_SPLITS]), task.score_columns())
    write_json(out / "history.json", history)
    summary = {"seconds": seconds, "device": str(device), "precision": precision, **probe, **history[-1]}
    write_json(out / "summary.json", summary)
    live.end(summary)
    write_params(out, seed=params.seed, backbone=cfg, finetune=ft)
    shutil.rmtree(ckpt, ignore_errors=True)  # done: the next run of these params starts clean
    return summary


def make_scheme(cfg: FinetuneParams, model: torch.nn.Module, total: int) -> Scheme:
    """The loop picks the scheme: the fixed ones from models.schemes, or AutoFreeze, a freezing policy that
    plugs into the Scheme hooks (models.schemes never imports it back)."""
    if cfg.scheme == "autofreeze":
        return AutoFreeze(model, cfg, total)
    return SCHEMES[cfg.scheme](model, cfg, total)
