"""Stage check: validate the whole params.yaml whenever it changes.

Each stage validates the file when it runs, but an edit that no stage reads (an unknown top-level key, a
misspelt section) reruns no stage, so without this one it would be silently ignored.
"""
import argparse

from pipeline.cli import run_stage
from pipeline.params import load_params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml")

    def body(args) -> str:
        params = load_params(args.params)
        return f"{args.params} is valid: {len(params.model_names())} models"

    run_stage("check", body, p)


if __name__ == "__main__":
    main()
