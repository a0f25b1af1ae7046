"""Stage head@<features>-<head>: fit a head on cached embeddings -> artifacts/heads/<features>-<head>.

<features> is a name from `sources` or from `concat` (several sources side by side).
"""
from pipeline import paths
from pipeline.cli import artifact_stage
from pipeline.params import ParamsError
from pipeline.heads.fit import run_head


def _out(params, args):
    feats = list(params.sources) + list(params.concat)
    if args.features not in feats:
        raise ParamsError(f"features {args.features!r}: not in sources or concat; allowed: {feats}")
    if args.head not in params.heads:
        raise ParamsError(f"heads.{args.head}: not in params.yaml; allowed: {sorted(params.heads)}")
    return paths.head(args.features, args.head)


def main() -> None:
    artifact_stage("head", ["features", "head"], __doc__, _out,
                   lambda params, args, out: run_head(params, args.features, args.head, out))


if __name__ == "__main__":
    main()
