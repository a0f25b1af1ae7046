"""Stage finetune@<backbone>: backbone + MLP head trained on train, chosen on valid -> artifacts/finetune/<bb>."""
from pipeline import paths
from pipeline.cli import artifact_stage
from pipeline.params import ParamsError
from pipeline.train.loop import run_finetune


def _out(params, args):
    if args.backbone not in params.backbones:
        raise ParamsError(f"backbones.{args.backbone}: not in params.yaml; allowed: {sorted(params.backbones)}")
    return paths.finetune(args.backbone)


def main() -> None:
    artifact_stage("finetune", ["backbone"], __doc__, _out,
                   lambda params, args, out: run_finetune(params, args.backbone, out,
                                                           live_dir=paths.live("finetune", args.backbone)))


if __name__ == "__main__":
    main()
