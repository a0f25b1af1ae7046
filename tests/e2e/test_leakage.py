"""No statistic sees test labels: fine-tuning, embeddings, heads and ensemble weights, built from the same
prepared rows, are bit-identical when only test labels change, and differ when valid labels change (so the
comparison has teeth). A regression task: its [0, 1] target scaling is where test rows leaked before."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import zarr
from safetensors.numpy import load_file

from pipeline.data.inputs import write_inputs
from pipeline.data.load import fit_target_scale
from pipeline.cache.embed import run_embed
from pipeline.ensemble.evaluate import run_ensemble
from pipeline.heads.fit import run_head
from pipeline.io import write_json
from pipeline.params import DataParams, Params
from pipeline.data.splits import split_rows
from pipeline.data.tasks import Task
from pipeline.train.loop import run_finetune
from tests.conftest import shrink_params

pytestmark = pytest.mark.slow
WORDS = "great awful plot acting boring superb dull moving funny slow tense warm cold bright".split()


def dataset(n=160, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, 8)) for _ in range(n)]
    y = [sum(w in ("great", "superb", "moving", "funny") for w in t.split()) * 10 + rng.normal() for t in texts]
    df = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": texts, "label": np.round(y, 3)})
    return df.assign(split=split_rows(df["label"].to_numpy(), DataParams(task="regression"), "regression", seed))


def build(root, params: Params, df: pd.DataFrame, monkeypatch) -> dict:
    """Every training stage, as the DVC stages run them, in `root`. -> {artifact: bytes or frame}."""
    root.mkdir()
    monkeypatch.chdir(root)  # stages read and write artifacts/ relative to the project root
    data = root / "artifacts/data"
    data.mkdir(parents=True)
    df.to_parquet(data / "dataset.parquet", index=False)
    (root / "artifacts/inputs").mkdir()
    write_inputs(root / "artifacts/inputs", df)
    write_json(data / "task.json", fit_target_scale(Task("regression"), df["label"], df["split"]).to_dict())
    outs = {"finetune/minilm": lambda o: run_finetune(params, "minilm", o, checkpoints=root / "ckpt")}
    outs.update({f"embeddings/{s}": (lambda o, s=s: run_embed(params, s, o)) for s in params.sources})
    outs.update({f"heads/svm/{f}": (lambda o, f=f: run_head(params, f, "svm", o))
                 for f in [*params.sources, *params.concat]})
    outs["ensemble"] = lambda o: run_ensemble(params, o)
    got = {"task": (data / "task.json").read_text()}
    for name, fn in outs.items():
        out = root / "artifacts" / name
        out.mkdir(parents=True)
        fn(out)
        for f in ("head.safetensors", "model/model.safetensors"):
            if (out / f).exists():  # tensors, not bytes: safetensors writes its metadata in hash order
                got[f"{name}/{f}"] = {k: v.tobytes() for k, v in load_file(str(out / f)).items()}
        if (out / "vectors.zarr").exists():
            got[f"{name}/vectors"] = zarr.open_array(str(out / "vectors.zarr"), mode="r")[:].tobytes()
        if (out / "preds.parquet").exists():
            got[f"{name}/preds"] = pd.read_parquet(out / "preds.parquet")
    got["weights"] = json.loads((root / "artifacts/ensemble/weights.json").read_text())
    shutil.rmtree(root / "ckpt", ignore_errors=True)
    return got


def same(a, b) -> bool:
    return a.equals(b) if isinstance(a, pd.DataFrame) else a == b


def test_test_labels_shape_nothing_valid_labels_do(tmp_path, monkeypatch, tiny_model_dir):
    p = shrink_params(tiny_model_dir)
    p["data"] = {**p["data"], "task": "regression"}
    p["ensemble"]["members"] = ["mlp-minilm", "minilm_ft-svm", "minilm_pt-svm", "both-svm"]
    params = Params.model_validate(p)
    df = dataset()
    test, valid = (df["split"] == "test").to_numpy(), (df["split"] == "valid").to_numpy()
    rng = np.random.default_rng(1)
    wild = df.copy()  # test targets far outside the train range, and shuffled
    wild.loc[test, "label"] = rng.permutation(df.loc[test, "label"].to_numpy()) * 10 + 500
    shuffled = df.copy()
    shuffled.loc[valid, "label"] = rng.permutation(df.loc[valid, "label"].to_numpy())

    ref, wild_out, shuf_out = (build(tmp_path / name, params, frame, monkeypatch) for name, frame in
                               (("base", df), ("wild_test", wild), ("shuffled_valid", shuffled)))
    assert ref.keys() == wild_out.keys() and len(ref) > 10
    changed = [k for k in ref if not same(ref[k], wild_out[k])]
    assert changed == [], f"test labels changed {changed}"
    # valid labels feed the ensemble weights (and nothing that trains on train rows)
    assert ref["weights"]["fit_loss"] != shuf_out["weights"]["fit_loss"]
    assert same(ref["finetune/minilm/head.safetensors"], shuf_out["finetune/minilm/head.safetensors"])
