"""Fine-tuning schemes: which parameters train at which step.

- full: everything trains.
- freeze: the classic linear probe; only the head trains (the backbone runs in eval mode, no dropout).
- gradual (ULMFiT gradual unfreezing): the head trains from step 0; every `unfreeze_every` steps one more
  transformer block unfreezes, top first; the embeddings unfreeze after the last block.
- lora: LoRA (Hu et al. 2021) on the attention query/value projections, injected in place with PEFT; the
  backbone is frozen, only the LoRA matrices (rank `adapter_size`) and the head train.
- adapter: Houlsby et al. 2019 bottleneck adapters (ours: PEFT has none, and the `adapters` library does not
  follow transformers 5): after the attention output projection and after the feed-forward output of every
  block, x + up(gelu(down(x))) with width `adapter_size`, up initialised to zero so training starts from the
  pretrained function. Adapters, layer norms (as in the paper) and the head train.
Frozen parameters keep `requires_grad=False`, so they get no gradient and AdamW leaves them untouched.
With lora/adapter only the trained backbone weights are saved (`adapter.safetensors` + `scheme.json`);
`load_finetuned_encoder` rebuilds the encoder from the pretrained backbone and them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline import PipelineError

from pipeline.params import FinetuneParams

log = logging.getLogger(__name__)


class Scheme:
    frozen = 0  # front units the scheme froze by its own decisions (AutoFreeze); logged per epoch

    def __init__(self, model: nn.Module, cfg: FinetuneParams, total: int):
        self.model, self.cfg, self.total = model, cfg, total

    def on_step(self, step: int) -> None:
        """Called before optimizer step `step` (0-based)."""

    def finish(self) -> None:
        """Called after the last step."""

    def state_dict(self) -> dict:
        """What a checkpoint must hold to resume this scheme exactly (tensors, numbers, lists)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def setup(self, inputs, device, precision: str, steps_per_epoch: int) -> None:
        """Called once before training with the training inputs (AutoFreeze caches activations of them)."""

    def after_backward(self) -> None:
        """Called after each backward pass, gradients in place."""

    def batch(self, inputs, idx, pin: bool = False) -> tuple:
        """The inputs of training rows `idx` (AutoFreeze skips decoding images it has cached)."""
        return inputs.batch(idx, pin=pin)

    def forward(self, forward, idx, batch):
        """Logits for training rows `idx`; `batch` is their inputs on the device."""
        return forward(*batch)

    def trainable_backbone(self) -> bool:
        return True


POST = ("norm", "fc_norm", "head", "head_drop", "pooler", "attn_pool", "global_pool", "fc")


class Stem(nn.Module):
    """Unit 0: every backbone parameter and module below the first block (BERT's whole embeddings module,
    a ViT's patch embedding with its cls token and position embedding), none of those after the last."""

    def __init__(self, model: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        inside = {id(p) for b in blocks for p in b.parameters()}
        children = list(model.named_children())
        holders = [i for i, (_, m) in enumerate(children) if any(id(p) in inside for p in m.parameters())]
        # Children registered after the one holding the last block run after it (EfficientNet's conv_head,
        # a final norm), whatever their names; POST also names those that models register earlier.
        post = set(POST) | {n for n, _ in children[max(holders, default=len(children)) + 1:]}
        self._params = [p for n, p in model.named_parameters() if id(p) not in inside and n.split(".")[0] not in post]
        self._mods = [m for n, m in children if n not in post and not any(id(p) in inside for p in m.parameters())]

    def parameters(self, recurse: bool = True):
        return iter(self._params)

    def requires_grad_(self, flag: bool = True):
        for p in self._params:
            p.requires_grad_(flag)
        return self

    def train(self, mode: bool = True):
        for m in self._mods:
            m.train(mode)
        return self


class Full(Scheme):
    """Everything trains, except with `freeze_bottom: k` the stem and the lowest k blocks, frozen from step 0
    and kept in eval mode (no dropout) as AutoFreeze keeps its frozen units. No gradient flows below block k,
    so their backward pass, the dense (vocab x hidden) embedding gradient and their optimizer work vanish:
    1.41x the tuned HF Trainer at k = 2 on this CPU (benchmarks/RESULTS.md, ours_fast)."""

    def __init__(self, model, cfg, total):
        super().__init__(model, cfg, total)
        self.bottom: list[nn.Module] = []
        if cfg.freeze_bottom:
            blocks = model.encoder.blocks()
            if cfg.freeze_bottom >= len(blocks):
                raise PipelineError(f"finetune.freeze_bottom {cfg.freeze_bottom}: the backbone has {len(blocks)} "
                                    "blocks; leave at least one to train (or use scheme: freeze)")
            self.bottom = [Stem(model.encoder.model, blocks), *blocks[:cfg.freeze_bottom]]
            for unit in self.bottom:
                unit.requires_grad_(False)
            log.info("freeze_bottom: the stem and blocks 0..%d stay frozen", cfg.freeze_bottom - 1)

    def on_step(self, step: int) -> None:
        for unit in self.bottom:  # model.train() re-enables dropout each step
            unit.train(False)


class Freeze(Scheme):
    def __init__(self, model, cfg, total):
        super().__init__(model, cfg, total)
        model.encoder.requires_grad_(False)

    def on_step(self, step: int) -> None:
        self.model.encoder.eval()  # model.train() re-enables dropout each step; a probe wants none

    def trainable_backbone(self) -> bool:
        return False


class Gradual(Scheme):
    def __init__(self, model, cfg, total):
        super().__init__(model, cfg, total)
        self.blocks = model.encoder.blocks()
        model.encoder.requires_grad_(False)
        self.unfrozen = -1

    def units(self, k: int) -> list[nn.Module]:
        """The first k units to unfreeze, top block first, then the embeddings, then everything."""
        order = list(reversed(self.blocks)) + [self.model.encoder.embeddings_module()]
        return order[:k] if k <= len(order) else [self.model.encoder]

    def on_step(self, step: int) -> None:
        k = step // self.cfg.unfreeze_every
        if k == self.unfrozen:
            return
        self.unfrozen = k
        for unit in self.units(k):
            unit.requires_grad_(True)
        log.info("gradual unfreezing: step %d, %d unit(s) trainable", step, k)


class Bottleneck(nn.Module):
    """Wraps a Linear: y = linear(x); y + up(gelu(down(y))). Identity at init (up = 0)."""

    def __init__(self, linear: nn.Linear, size: int):
        super().__init__()
        self.linear = linear
        self.down = nn.Linear(linear.out_features, size)
        self.up = nn.Linear(size, linear.out_features)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y + self.up(nn.functional.gelu(self.down(y)))


# Per block: the attention output projection and the feed-forward output projection (BERT-style names).
ADAPTER_SITES = (("attention", "output", "dense"), ("output", "dense"))


def add_adapters(encoder, size: int) -> None:
    for blk in encoder.blocks():
        for site in ADAPTER_SITES:
            parent = blk
            try:
                for part in site[:-1]:
                    parent = getattr(parent, part)
                lin = getattr(parent, site[-1])
            except AttributeError:
                raise PipelineError(f"adapter scheme: {type(blk).__name__} has no {'.'.join(site)} "
                                    "(BERT-style blocks are supported; use scheme: lora)") from None
            if not isinstance(lin, Bottleneck):
                setattr(parent, site[-1], Bottleneck(lin, size))


def add_lora(encoder, rank: int) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    # PEFT's defaults for BERT-like models target the query/value projections
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["query", "value"])
    inject_adapter_in_model(cfg, encoder.model)


def is_adapter_param(name: str) -> bool:
    return "lora_" in name or ".down." in name or ".up." in name


class Adapted(Scheme):
    """Shared by lora and adapter: freeze the backbone, train the injected weights (+ norms for Houlsby)."""

    def __init__(self, model, cfg, total):
        super().__init__(model, cfg, total)
        inject(self.model.encoder, cfg.scheme, cfg.adapter_size)
        for name, p in model.encoder.named_parameters():
            p.requires_grad_(is_adapter_param(name) or (cfg.scheme == "adapter" and "LayerNorm" in name))

    def trainable_backbone(self) -> bool:
        return False


def inject(encoder, scheme: str, size: int) -> None:
    (add_lora if scheme == "lora" else add_adapters)(encoder, size)


def save_adapted(encoder, cfg, folder: Path) -> None:
    """Only the backbone weights the scheme trained: adapter.safetensors + scheme.json."""
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.named_parameters() if v.requires_grad}
    save_file(state, str(folder / "adapter.safetensors"))
    (folder / "scheme.json").write_text(json.dumps({"scheme": cfg.scheme, "adapter_size": cfg.adapter_size}))


def load_finetuned_encoder(backbone_cfg, folder: Path):
    """The fine-tuned encoder in `folder`: a full HF model (model/), or pretrained + adapter.safetensors."""
    from pipeline.models.backbones import make_backbone

    if (folder / "model").exists():
        return make_backbone(backbone_cfg, path=str(folder / "model"))
    if not (folder / "scheme.json").exists():
        raise PipelineError(f"{folder}: no model/ and no scheme.json (run the finetune stage first)")
    meta = json.loads((folder / "scheme.json").read_text())
    encoder = make_backbone(backbone_cfg)
    inject(encoder, meta["scheme"], meta["adapter_size"])
    state = load_file(str(folder / "adapter.safetensors"))
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or any(is_adapter_param(k) for k in missing):
        raise PipelineError(f"{folder}/adapter.safetensors does not fit the backbone: "
                            f"unexpected {unexpected[:3]}, missing {[k for k in missing if is_adapter_param(k)][:3]}")
    return encoder


SCHEMES = {"full": Full, "freeze": Freeze, "gradual": Gradual, "lora": Adapted, "adapter": Adapted}
