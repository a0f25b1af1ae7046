"""Stage evaluate: test metrics for every model and the ensemble -> artifacts/evaluate/{metrics.json, plots/}."""
from pipeline import paths
from pipeline.cli import artifact_stage
from pipeline.ensemble.evaluate import run_evaluate


def main() -> None:
    artifact_stage("evaluate", [], __doc__, lambda params, args: paths.EVALUATE,
                   lambda params, args, out: run_evaluate(params, out))


if __name__ == "__main__":
    main()
