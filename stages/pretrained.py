"""Stage pretrained@<backbone>: resolve the backbone and fingerprint its weights -> artifacts/pretrained/<bb>.

Embeddings of the pretrained backbone depend on this folder, so they rerun when the weights change and
not when a fine-tuning param does. A backbone without weights (a timm model with no pretrained_file) is drawn
here once, seeded, and saved (model.safetensors): embed, finetune and predict all load these weights.
"""
from pipeline import paths
from pipeline.models.backbones import fingerprint, make_backbone, resolve_model_path, saves_weights
from pipeline.cli import artifact_stage
from pipeline.io import write_json, write_params
from pipeline.params import ParamsError


def _out(params, args):
    if args.backbone not in params.backbones:
        raise ParamsError(f"backbones.{args.backbone}: not in params.yaml; allowed: {sorted(params.backbones)}")
    return paths.pretrained(args.backbone)


def _run(params, args, out) -> dict:
    cfg = params.backbones[args.backbone]
    fp = fingerprint(cfg)
    write_json(out / "backbone.json", {"name": cfg.name, **fp})
    if saves_weights(cfg):
        import torch
        torch.manual_seed(0)  # the same draw on every rerun of this stage
        make_backbone(cfg).save(out)
    write_params(out, backbone=cfg)
    where = resolve_model_path(cfg.name) if cfg.modality == "text" else (cfg.pretrained_file or "timm, random init")
    return {"name": cfg.name, "path": where, "files_hashed": len(fp["files"])}


def main() -> None:
    artifact_stage("pretrained", ["backbone"], __doc__, _out, _run)


if __name__ == "__main__":
    main()
