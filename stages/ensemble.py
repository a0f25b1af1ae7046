"""Stage ensemble: weighted average of `ensemble.members`, weights chosen on valid -> artifacts/ensemble."""
from pipeline import paths
from pipeline.cli import artifact_stage
from pipeline.ensemble.evaluate import run_ensemble


def main() -> None:
    artifact_stage("ensemble", [], __doc__, lambda params, args: paths.ENSEMBLE,
                   lambda params, args, out: run_ensemble(params, out))


if __name__ == "__main__":
    main()
