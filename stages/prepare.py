"""Stage prepare: dataset -> artifacts/inputs/inputs.parquet (what the encoders read) and
artifacts/data/{dataset.parquet, task.json, report.json, params.yaml} (labels and splits)."""
import argparse

from pipeline import paths
from pipeline.cli import run_stage
from pipeline.data.inputs import write_inputs
from pipeline.data.load import prepare_dataset
from pipeline.io import atomic_dir, write_json, write_params
from pipeline.params import load_params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml")

    def body(args) -> str:
        params = load_params(args.params)
        df, task, report = prepare_dataset(params.data, params.seed)
        with atomic_dir(paths.INPUTS) as out:  # a pure function of the rows' inputs: no params record
            write_inputs(out, df)
        with atomic_dir(paths.DATA) as out:
            df.to_parquet(out / "dataset.parquet", index=False)
            write_json(out / "task.json", task.to_dict())
            write_json(out / "report.json", report)
            write_params(out, seed=params.seed, data=params.data)
        return f"{len(df)} rows, task {task.kind}, splits {report['splits']}"

    run_stage("prepare", body, p)


if __name__ == "__main__":
    main()
