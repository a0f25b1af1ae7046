"""Stage evaluate: the ensemble's weights, fit on valid (`ensemble.members`) -> artifacts/ensemble, then test
metrics for every model and the ensemble -> artifacts/evaluate/{metrics.json, plots/}.

One stage, not an ensemble stage and an evaluate stage: they always reran together (the ensemble's
predictions are a model evaluate scores, and `evaluate.primary` is the ensemble's objective and check), and
the second process and DVC's handling of a second stage cost about 1.6 s of every head change
(benchmarks/RESULTS.md, "One stage for the ensemble and its evaluation").
"""
from pipeline import paths
from pipeline.cli import artifact_stage
from pipeline.ensemble.evaluate import run_ensemble, run_evaluate
from pipeline.io import atomic_dir


def run(params, args, out) -> dict:
    # evaluate scores the ensemble's predictions in its temporary folder: artifacts/ensemble is replaced only
    # once both steps have succeeded
    with atomic_dir(paths.ENSEMBLE) as tmp:
        ensemble = run_ensemble(params, tmp)
        metrics = run_evaluate(params, out, ensemble=tmp)
    return {f"ensemble_{k}": v for k, v in ensemble.items()} | metrics


def main() -> None:
    artifact_stage("evaluate", [], __doc__, lambda params, args: paths.EVALUATE, run)


if __name__ == "__main__":
    main()
