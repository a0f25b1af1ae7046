"""Stage check: validate the whole params.yaml whenever it changes, and remove the artifact folders of
removed backbones, sources and heads -> artifacts/names/{sources,models}.json.

Each stage validates the file when it runs, but an edit that no stage reads (an unknown top-level key, a
misspelt section) reruns no stage, so without this one it would be silently ignored. Left-over folders would
change the hash of artifacts/heads and artifacts/embeddings, which the evaluate and head stages read
whole: their dvc.lock would then not match a clean checkout. They run after this stage (they depend on
its outputs), and evaluate reruns when the set of models changes.
"""
import argparse
import logging
import os
import shutil

from pipeline import paths
from pipeline.cli import run_stage
from pipeline.io import write_json
from pipeline.params import load_params

log = logging.getLogger("svmft")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml")

    def body(args) -> str:
        params = load_params(args.params)
        stale = paths.stale_folders(params.backbones, params.sources, params.heads)
        for d in stale:
            log.info("removing %s: no stage of params.yaml writes it", d)
            shutil.rmtree(d)
        # two files, so that a new head does not rerun the head stages of the other heads
        for out, names in ((paths.SOURCE_NAMES, sorted(params.sources)), (paths.MODEL_NAMES, params.model_names())):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
            write_json(tmp, names)
            tmp.replace(out)
        return f"{args.params} is valid; {len(stale)} stale folders removed"

    run_stage("check", body, p)


if __name__ == "__main__":
    main()
