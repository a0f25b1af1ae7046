"""Stage head@<head>: fit head <head> on every feature set (each source, each concat of sources) of
params.yaml -> artifacts/heads/<head>/<features>/, reusing the previous fit of a feature set whose inputs did
not change (pipeline/heads/fit.py).
"""
from pipeline import paths
from pipeline.cli import artifact_stage
from pipeline.params import ParamsError
from pipeline.heads.fit import run_heads


def _out(params, args):
    if args.head not in params.heads:
        raise ParamsError(f"heads.{args.head}: not in params.yaml; allowed: {sorted(params.heads)}")
    return paths.HEADS / args.head


def main() -> None:
    artifact_stage("head", ["head"], __doc__, _out, lambda params, args, out: run_heads(params, args.head, out))


if __name__ == "__main__":
    main()
