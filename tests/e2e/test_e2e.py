"""End to end: real `dvc repro` in a temporary git repo on a 240-row slice with a tiny backbone.

Checks every artifact, that an unchanged rerun does nothing, that changing heads.svm.C reruns only the heads,
ensemble and evaluate, that a fine-tuning param never reruns prepare, that a new split never reruns the pretrained
embeddings, and that a stage killed with SIGKILL leaves nothing DVC would take as a valid output.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

from tests.conftest import make_repo, modules_after, predict_test_rows, ran, sh, shrink_params, venv_env

pytestmark = pytest.mark.slow


def set_param(repo: Path, dotted: str, value) -> None:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    d = p
    *parents, last = dotted.split(".")
    for k in parents:
        d = d[k]
    d[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model_dir):
    return make_repo(tmp_path_factory.mktemp("repo"), shrink_params(tiny_model_dir))


def test_full_repro_and_artifacts(repo):
    out = sh(repo, "dvc", "repro")
    assert ran(out) == {"check", "prepare", "pretrained@minilm", "finetune@minilm", "embed@minilm_ft", "embed@minilm_pt",
                        "head@svm", "evaluate"}
    art = repo / "artifacts"
    data = pd.read_parquet(art / "data" / "dataset.parquet")
    assert list(data.columns) == ["id", "text", "label", "split"] and len(data) == 240
    inputs = pd.read_parquet(art / "inputs" / "inputs.parquet")  # what embed depends on: no label, no split
    assert list(inputs.columns) == ["id", "text", "input_hash"] and inputs["id"].tolist() == data["id"].tolist()
    for src in ("minilm_ft", "minilm_pt"):
        arr = zarr.open_array(str(art / "embeddings" / src / "vectors.zarr"), mode="r")
        assert arr.shape == (240, 32) and arr.dtype == "float32"
        idx = pd.read_parquet(art / "embeddings" / src / "index.parquet")
        assert list(idx.columns) == ["id", "row", "input_hash"] and idx["id"].tolist() == data["id"].tolist()
        assert idx["input_hash"].tolist() == inputs["input_hash"].tolist()
        assert json.loads((art / "embeddings" / src / "summary.json").read_text())["embedded"] == 240
    assert (art / "finetune" / "minilm" / "model" / "model.safetensors").exists()
    assert (art / "finetune" / "minilm" / "head.safetensors").exists()
    for m in ("finetune/minilm", "heads/svm/minilm_ft", "heads/svm/minilm_pt", "heads/svm/both", "ensemble"):
        preds = pd.read_parquet(art / m / "preds.parquet")
        assert set(preds["split"]) == {"valid", "test"} and "score_fresh" in preds
        assert (art / m / "params.yaml").exists()  # resolved params recorded beside every artifact
    metrics = json.loads((art / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {"mlp-minilm", "minilm_ft-svm", "minilm_pt-svm", "both-svm", "ensemble", "ensemble_valid",
                            "ensemble_vs_best"}
    assert set(metrics["ensemble"]) == {"accuracy", "f1", "roc_auc", "log_loss"}
    weights = json.loads((art / "ensemble" / "weights.json").read_text())["weights"]
    assert sum(weights.values()) == pytest.approx(1)
    for plot in ("models", "ensemble", "detail"):  # what dvc.yaml declares, with its template
        assert (art / "evaluate" / "plots" / f"{plot}.csv").exists() and (art / "evaluate" / "plots" / f"{plot}.json").exists()
    assert "metrics.json" in sh(repo, "dvc", "metrics", "show")


def test_predict_reproduces_the_stored_ensemble(repo):
    test, got, want = predict_test_rows(repo)
    assert len(got) == len(test) and got.index.tolist() == test["id"].tolist()
    # row by row: the same hard prediction, and the same score up to float32 summation order (the test rows are
    # batched with other rows in the embed stage than here, so matmul shapes differ)
    hard = np.where(want["score_fresh"] >= 0.5, "fresh", "rotten")
    assert (got["prediction"].to_numpy() == hard).all()
    assert np.abs(got["score_fresh"] - want["score_fresh"]).max() < 1e-5
    # params changed without `dvc repro`: predict refuses, naming what changed
    params = (repo / "params.yaml").read_text()
    set_param(repo, "backbones.minilm.pooling", "cls")
    set_param(repo, "backbones.minilm.max_length", 16)
    r = subprocess.run([sys.executable, "-m", "stages.predict", "new.csv", "--out", "stale.csv"], cwd=repo,
                       capture_output=True, text=True)
    (repo / "params.yaml").write_text(params)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "artifacts/finetune/minilm (backbone.max_length, backbone.pooling)" in errors[0]
    assert errors[0].endswith("run `dvc repro` first") and not (repo / "stale.csv").exists()
    (repo / "bad.csv").write_text("id,review\n1,x\n")
    r = subprocess.run([sys.executable, "-m", "stages.predict", "bad.csv", "--out", "p.csv"], cwd=repo,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "bad.csv: missing column 'text'" in r.stderr and not (repo / "p.csv").exists()


@pytest.mark.parametrize("argv", [["stages.head", "svm"], ["stages.evaluate"]])
def test_head_and_evaluate_stages_never_import_torch(repo, argv):
    """Changing heads.svm.C must cost seconds: these stages do their work without torch/transformers/timm,
    whose import alone costs seconds per stage. The stage really runs; then its modules are listed."""
    if argv[0] == "stages.head":  # no fit to reuse: it fits on every feature set, sources and concat
        shutil.rmtree(repo / "artifacts/heads/svm")
        shutil.rmtree(repo / ".cache/heads")
    r, loaded = modules_after(repo, argv, ("torch", "transformers", "timm", "torchvision", "peft", "sklearn"))
    out = r.stdout + r.stderr
    assert r.returncode == 0 and loaded is not None, out[-2000:]
    assert not set(loaded) - {"sklearn"}, out[-2000:]
    if argv == ["stages.evaluate"]:  # binary, accuracy: numpy metrics, numpy folds; no scikit-learn import
        assert "sklearn" not in loaded, out[-2000:]
    if argv[0] == "stages.head":
        assert fits(repo, "svm")["fitted"] == ["minilm_ft", "minilm_pt", "both"], out[-2000:]
    sh(repo, "dvc", "commit", "-f", "-q")  # the rerun rewrote outputs DVC already had: same content, same lock


def test_predict_loads_only_what_it_uses(repo):
    """predict on 20 texts with a text backbone and sklearn-style heads: no timm (images), no DVC, no PEFT
    (scheme full), no Zarr (it embeds, it reads no cache). torchvision is not checked: transformers itself
    imports it when it is installed."""
    data = pd.read_parquet(repo / "artifacts/data/dataset.parquet")
    data.head(20)[["id", "text"]].to_csv(repo / "twenty.csv", index=False)
    argv = ["stages.predict", "twenty.csv", "--out", "twenty-pred.csv"]
    r, loaded = modules_after(repo, argv, ("timm", "dvc", "dvclive", "peft", "zarr", "onnxruntime", "openvino"))
    assert r.returncode == 0 and loaded == [], (r.stdout + r.stderr)[-2000:]
    assert len(pd.read_csv(repo / "twenty-pred.csv")) == 20


def test_unchanged_rerun_does_nothing(repo):
    out = sh(repo, "dvc", "repro")
    assert ran(out) == set(), out


def fits(repo: Path, head: str) -> dict:
    """The head stage's summary: which feature sets it fit and which it reused from its previous run."""
    return json.loads((repo / "artifacts/heads" / head / "summary.json").read_text())


def test_changing_svm_C_reruns_only_heads_and_after(repo):
    set_param(repo, "heads.svm.C", 3.0)
    out = sh(repo, "dvc", "repro")
    assert ran(out) == {"check", "head@svm", "evaluate"}
    f = fits(repo, "svm")
    assert (f["fitted"], f["reused"]) == (["minilm_ft", "minilm_pt", "both"], [])


def test_adding_a_head_runs_only_its_stages(repo):
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["heads"]["logreg"] = {"kind": "logistic", "C": 1.0}
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    out = sh(repo, "dvc", "repro")
    assert ran(out) == {"check", "head@logreg", "evaluate"}
    assert "minilm_pt-logreg" in json.loads((repo / "artifacts/evaluate/metrics.json").read_text())


def test_kfold_heads_write_oof_rows_and_the_ensemble_fits_on_them(repo):
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["heads"]["svm"]["folds"] = 3
    p["ensemble"]["members"] = ["minilm_pt-svm", "minilm_pt-logreg"]
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    out = sh(repo, "dvc", "repro")
    assert ran(out) == {"check", "head@svm", "evaluate"}
    art, data = repo / "artifacts", pd.read_parquet(repo / "artifacts/data/dataset.parquet")
    n = data["split"].value_counts()
    pt = pd.read_parquet(art / "heads/svm/minilm_pt/preds.parquet")["split"].value_counts()
    assert pt.to_dict() == n.to_dict()  # pretrained features: OOF for every train and valid row
    ft = pd.read_parquet(art / "heads/svm/minilm_ft/preds.parquet")["split"].value_counts()
    assert set(ft.index) == {"valid", "test"}  # the fine-tuned backbone saw the train labels
    rep = json.loads((art / "heads/svm/minilm_pt/report.json").read_text())
    assert rep["folds"] == 3 and rep["oof_rows"] == n["train"] + n["valid"]
    # logreg has no folds: it predicts no train rows, so the weights are fit on valid only ...
    assert json.loads((art / "ensemble/weights.json").read_text())["fit_rows"] == {"valid": n["valid"], "train_oof": 0}
    set_param(repo, "heads.logreg.folds", 3)
    sh(repo, "dvc", "repro")
    # ... and once every member is k-fold on pretrained features, on the train OOF rows as well
    assert json.loads((art / "ensemble/weights.json").read_text())["fit_rows"] == {"valid": n["valid"],
                                                                                   "train_oof": n["train"]}


def test_a_removed_head_leaves_no_folder_and_the_lock_matches_a_clean_checkout(repo):
    """Folders of removed heads stayed in artifacts/heads, which ensemble and evaluate read whole: dvc.lock
    recorded them, and a clean checkout (without them) no longer matched it."""
    p = yaml.safe_load((repo / "params.yaml").read_text())
    del p["heads"]["logreg"]
    p["ensemble"]["members"] = ["minilm_pt-svm"]
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert {"check", "evaluate"} <= ran(sh(repo, "dvc", "repro"))
    assert not list((repo / "artifacts/heads").glob("*logreg*")) and (repo / "artifacts/heads/svm").is_dir()
    assert not any("logreg" in m for m in json.loads((repo / "artifacts/evaluate/metrics.json").read_text()))
    for folder in ("heads", "embeddings", "finetune"):
        shutil.rmtree(repo / "artifacts" / folder)
    sh(repo, "dvc", "checkout")
    assert "up to date" in sh(repo, "dvc", "status")


def test_an_unknown_key_fails_dvc_repro(repo):
    """A key no stage reads used to rerun nothing, so it was silently ignored."""
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params + "ensemble_members: [mlp-minilm]\n")
    out = sh(repo, "dvc", "repro", check=False)
    assert "error: check: params.yaml: ensemble_members: unknown key" in out, out
    (repo / "params.yaml").write_text(params)
    assert ran(sh(repo, "dvc", "repro")) == set()  # back to the file the last check passed


def test_changing_a_finetune_param_never_reruns_prepare(repo):
    set_param(repo, "finetune.lr", 2e-4)
    out = sh(repo, "dvc", "repro")
    stages = ran(out)
    assert "finetune@minilm" in stages and "embed@minilm_ft" in stages
    assert not stages & {"prepare", "pretrained@minilm", "embed@minilm_pt"}
    # the head stage reruns for the fine-tuned features; the pretrained source's fit is reused, not refit
    f = fits(repo, "svm")
    assert (f["fitted"], f["reused"]) == (["minilm_ft", "both"], ["minilm_pt"])


def lock_outs(repo: Path, stage: str) -> list:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]["outs"]


def test_a_new_split_reruns_the_label_consumers_but_not_the_pretrained_embeddings(repo):
    """Embed depends on artifacts/inputs, not on the labels and splits of artifacts/data."""
    before = lock_outs(repo, "embed@minilm_pt")
    set_param(repo, "data.valid_frac", 0.2)
    stages = ran(sh(repo, "dvc", "repro"))
    assert {"prepare", "finetune@minilm", "embed@minilm_ft", "head@svm", "evaluate"} <= stages, stages
    assert fits(repo, "svm")["reused"] == []  # new labels and splits: every feature set is refit
    assert not stages & {"embed@minilm_pt", "pretrained@minilm"}, stages
    assert lock_outs(repo, "embed@minilm_pt") == before
    data = pd.read_parquet(repo / "artifacts/data/dataset.parquet")
    pt = pd.read_parquet(repo / "artifacts/heads/svm/minilm_pt/preds.parquet")
    assert (pt["split"] == "valid").sum() == (data["split"] == "valid").sum()  # the head saw the new split
    # the fine-tuned source re-embeds, but its new weights share no key with the old store
    assert json.loads((repo / "artifacts/embeddings/minilm_ft/summary.json").read_text())["reused"] == 0


@pytest.mark.parametrize("stage, folder, marker", [
    ("embed@minilm_pt", "artifacts/embeddings/minilm_pt", "embeddings"),
    ("finetune@minilm", "artifacts/finetune/minilm", "finetune"),
])
def test_sigkill_leaves_no_valid_output(repo, stage, folder, marker):
    """Kill the stage mid-run; DVC must see it as changed, and the next repro must complete."""
    proc = subprocess.Popen(["dvc", "repro", "-f", "-s", stage], cwd=repo, env=venv_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tmp_glob = "__".join(Path(folder).parts) + ".tmp-*"
    tmp_root = repo / "artifacts" / ".tmp"
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_root.glob(tmp_glob)):
        time.sleep(0.05)
    assert list(tmp_root.glob(tmp_glob)), "the stage never started writing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    status = sh(repo, "dvc", "status", stage)
    if marker == "embeddings":  # persist: true: the previous complete store stays, the one dvc.lock records
        assert "up to date" in status, status
    else:
        assert not (repo / folder).exists()  # DVC removed the old output before running; nothing new was renamed in
        assert "deleted" in status or "changed" in status, status
        out = sh(repo, "dvc", "repro")
        # either rerun, or (same params) restored from DVC's run cache: the killed run was never cached
        assert stage in ran(out) or f"Stage '{stage}' is cached - skipping run, checking out outputs" in out, out
    assert (repo / folder).exists() and not list((repo / folder).parent.glob("*.tmp*"))
    if marker == "embeddings":
        from pipeline.cache.store import read_embeddings
        X, _ = read_embeddings(repo / folder)
        assert X.shape == (240, 32)
    else:
        assert (repo / folder / "model" / "model.safetensors").exists() and (repo / folder / "preds.parquet").exists()
    assert ran(sh(repo, "dvc", "repro")) == set()
    assert "up to date" in sh(repo, "dvc", "status")
