"""Write scikit-learn's digits (1,797 8x8 grayscale images, 10 classes, shipped with scikit-learn: offline) as
PNG files in data/digits/<class>/<n>.png, the layout of `data.source: folder`.

    python examples/digits.py && cp examples/digits.yaml params.yaml && dvc repro
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/digits")
    out = Path(ap.parse_args().out)
    d = load_digits()
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        (out / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 / 16).astype(np.uint8), mode="L").save(out / str(y) / f"{i:04d}.png")
    print(f"{len(d.images)} images -> {out}/<class>/")


if __name__ == "__main__":
    main()
