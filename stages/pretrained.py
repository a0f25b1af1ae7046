"""Stage pretrained@<backbone>: resolve the backbone and fingerprint its weights -> artifacts/pretrained/<bb>.

Embeddings of the pretrained backbone depend on this folder, so they rerun when the weights change and
not when a fine-tuning param does.
"""
from pipeline import paths
from pipeline.backbones import fingerprint, resolve_model_path
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
    write_params(out, backbone=cfg)
    where = resolve_model_path(cfg.name) if cfg.modality == "text" else (cfg.pretrained_file or "timm, random init")
    return {"name": cfg.name, "path": where, "files_hashed": len(fp["files"])}


def main() -> None:
    artifact_stage("pretrained", ["backbone"], __doc__, _out, _run)


if __name__ == "__main__":
    main()
