"""Image backbones: timm models with the same interface as text (see backbones.TextEncoder).

- `ImageEncoder`: a timm model created with `num_classes=0`, so its output is the pooled feature vector.
- `make_image_backbone(cfg, path)`: `pretrained: false` (random init), or weights from a local file through
  timm's `pretrained_cfg_overlay=dict(file=...)`, then checked tensor by tensor: a partial load is an error.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from pipeline import PipelineError
from pipeline.data.images import ImageInputs
from pipeline.io import file_sha256


class ImageEncoder(nn.Module):
    """(B, C, H, W) pixels -> pooled features (B, num_features)."""

    def __init__(self, model: nn.Module, cfg):
        super().__init__()
        from timm.data import create_transform, resolve_data_config

        self.model, self.cfg = model, cfg
        self.hidden_size = model.num_features
        data_cfg = resolve_data_config({}, model=model)
        # a ViT built with model_kwargs img_size only accepts that size; timm's data config still says 224
        size = cfg.image_size or _img_size(getattr(getattr(model, "patch_embed", None), "img_size", None))
        if size and size != data_cfg["input_size"][1]:
            data_cfg.update(input_size=(data_cfg["input_size"][0], size, size), crop_pct=1.0)
        self.data_config = data_cfg
        self.transform = create_transform(**data_cfg, is_training=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)

    def prepare(self, paths: Sequence[str]) -> ImageInputs:
        return ImageInputs(paths, self.transform, self.data_config["input_size"][0])

    # AutoFreeze: ViT-style models (patch_embed + blocks) can start at a block
    def forward_prefix(self, batch, k: int) -> torch.Tensor:
        m = self._vit()
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(batch[0]))))
        for blk in m.blocks[:k]:
            x = blk(x)
        return x

    def forward_from(self, hidden: torch.Tensor, batch, k: int) -> torch.Tensor:
        m = self._vit()
        for blk in m.blocks[k:]:
            hidden = blk(hidden)
        return m.forward_head(m.norm(hidden), pre_logits=True)

    def _vit(self) -> nn.Module:
        if not all(hasattr(self.model, a) for a in ("patch_embed", "_pos_embed", "blocks", "forward_head")):
            raise PipelineError(f"{self.cfg.name}: AutoFreeze caching supports ViT-style timm models; "
                                "set finetune.autofreeze_cache: none")
        return self.model

    def blocks(self) -> list[nn.Module]:
        """Stages/blocks bottom to top: ViT `blocks`, ConvNeXt/Swin `stages`/`layers`, ResNet `layer1..4`."""
        for name in ("blocks", "stages", "layers"):
            mod = getattr(self.model, name, None)
            if isinstance(mod, (nn.Sequential, nn.ModuleList)) and len(mod):
                return list(mod)
        layers = [getattr(self.model, f"layer{i}") for i in range(1, 5) if hasattr(self.model, f"layer{i}")]
        if layers:
            return layers
        raise PipelineError(f"cannot find the blocks of timm model {self.cfg.name!r}")

    def embeddings_module(self) -> nn.Module:
        """The stem: everything below the first block (patch embedding, conv stem)."""
        for name in ("patch_embed", "stem", "conv_stem"):
            if hasattr(self.model, name):
                return getattr(self.model, name)
        return nn.ModuleList([m for n, m in self.model.named_children() if n in ("conv1", "bn1")])

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "timm.json").write_text(json.dumps({"name": self.cfg.name, "data_config": self.data_config}))


def _img_size(v) -> int | None:
    return int(v[0]) if isinstance(v, (tuple, list)) else (int(v) if v else None)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, never arbitrary objects
    return state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state


def check_loaded(model: nn.Module, path: Path) -> None:
    """Every tensor of `model` must equal the tensor of the same name in the file: no silent partial load."""
    state = _read_state(path)
    missing = [k for k in model.state_dict() if k not in state]
    differ = [k for k, v in model.state_dict().items()
              if k in state and (v.shape != state[k].shape or not torch.equal(v.cpu(), state[k].to(v.dtype)))]
    if missing or differ:
        raise PipelineError(f"{path}: does not fit timm model: missing {len(missing)} tensors {missing[:3]}, "
                            f"{len(differ)} differ {differ[:3]} (a partial load is refused)")


def make_image_backbone(cfg, path: str | None = None) -> ImageEncoder:
    """cfg: BackboneParams with modality image. path: a folder saved by ImageEncoder.save (fine-tuned)."""
    import timm

    kw = dict(num_classes=0, **cfg.model_kwargs)
    try:
        if path is not None:
            model = timm.create_model(cfg.name, pretrained=False, **kw)
            weights = Path(path) / "model.safetensors"
            from safetensors.torch import load_file
            model.load_state_dict(load_file(str(weights)))
        elif cfg.pretrained_file:
            weights = Path(cfg.pretrained_file)
            if not weights.is_file():
                raise PipelineError(f"backbones: pretrained_file {weights}: file not found")
            model = timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)), **kw)
            check_loaded(model, weights)
        else:
            model = timm.create_model(cfg.name, pretrained=False, **kw)
    except (RuntimeError, ValueError, KeyError) as e:
        raise PipelineError(f"backbone {cfg.name!r}: cannot create/load the timm model: {e}") from None
    return ImageEncoder(model, cfg)


def image_fingerprint(cfg) -> dict:
    """What the pretrained embeddings depend on: the weights file's sha256, or the timm version for random init."""
    import timm

    if not cfg.pretrained_file:
        return {"files": {}, "timm": timm.__version__}
    return {"files": {Path(cfg.pretrained_file).name: file_sha256(cfg.pretrained_file)}, "timm": timm.__version__}
