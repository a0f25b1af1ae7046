"""Predict on a new CSV/Parquet/JSONL of texts (or image paths) with the trained pipeline (no retraining).

    python -m stages.predict new.csv --out predictions.csv [--text-column text] [--id-column id]
                             [--image-root DIR]
"""
import argparse

from pipeline.cli import run_stage
from pipeline.params import load_params
from pipeline.predict.serve import predict_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input")
    p.add_argument("--out", required=True, help="output .csv or .parquet")
    p.add_argument("--text-column", help="the input column (texts or image paths)")
    p.add_argument("--image-root", help="relative image paths start here (default: the input file's folder)")
    p.add_argument("--id-column")
    p.add_argument("--params", default="params.yaml")

    def body(args) -> str:
        res = predict_file(load_params(args.params), args.input, args.out, args.text_column, args.id_column,
                           args.image_root)
        return f"{len(res)} rows -> {args.out}"

    run_stage("predict", body, p)


if __name__ == "__main__":
    main()
