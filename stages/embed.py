"""Stage embed@<source>: frozen backbone -> artifacts/embeddings/<source>/{vectors.zarr, index.parquet}."""
from pipeline import paths
from pipeline.cli import artifact_stage
from pipeline.params import ParamsError
from pipeline.cache.embed import run_embed


def _out(params, args):
    if args.source not in params.sources:
        raise ParamsError(f"sources.{args.source}: not in params.yaml; allowed: {sorted(params.sources)}")
    return paths.embeddings(args.source)


def main() -> None:
    artifact_stage("embed", ["source"], __doc__, _out, lambda params, args, out: run_embed(params, args.source, out))


if __name__ == "__main__":
    main()
