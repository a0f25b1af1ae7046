"""Images: a tiny random-init timm ViT on generated PNG files, through real `dvc repro` (prepare -> finetune ->
embed -> svm -> ensemble -> evaluate) for classification and regression, plus the image checks of prepare and
the pretrained-file check."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import PipelineError
from tests.conftest import ROOT, make_repo, modules_after, ran, sh

TINY_VIT = {"img_size": 16, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


def write_pngs(folder, n=48, seed=0) -> pd.DataFrame:
    """n 16x16 RGB images: dark (class 'dark') or bright ('bright') noise; `target` = mean brightness 0..100."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        level = rng.uniform(0.1, 0.45) if i % 2 else rng.uniform(0.55, 0.9)
        px = np.clip(rng.normal(level, 0.05, (16, 16, 3)), 0, 1)
        cls = "dark" if i % 2 else "bright"
        (folder / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray((px * 255).astype(np.uint8)).save(folder / cls / f"{i:03d}.png")
        rows.append({"file": f"{cls}/{i:03d}.png", "label": cls, "target": round(100 * px.mean(), 2)})
    return pd.DataFrame(rows)


def image_params(data: dict) -> dict:
    p = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    p["data"] = {"task": "binary", "valid_frac": 0.25, "test_frac": 0.25, **data}
    p["backbones"] = {"vit": {"modality": "image", "name": "vit_tiny_patch16_224", "model_kwargs": TINY_VIT}}
    p["finetune"].update(epochs=2, batch_size=8, precision="fp32", hidden=16, lr=1e-3)
    p["embed"].update(batch_size=16, precision="fp32")
    p["sources"] = {"vit_ft": {"backbone": "vit", "from": "finetune"}, "vit_pt": {"backbone": "vit", "from": "pretrained"}}
    p["concat"] = {}
    p["heads"] = {"svm": {"kind": "svm", "C": 1.0}}
    p["ensemble"]["members"] = ["mlp-vit", "vit_ft-svm", "vit_pt-svm"]
    return p


@pytest.mark.slow
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_images_through_dvc_repro(tmp_path, task):
    repo = tmp_path / "repo"
    table = write_pngs(repo / "data" / "imgs")
    if task == "binary":
        data = {"source": "folder", "path": "data/imgs"}
    else:
        table.to_csv((repo / "data" / "imgs.csv"), index=False)
        data = {"source": "file", "path": "data/imgs.csv", "image_column": "file", "image_root": "data/imgs",
                "label_column": "target",
                "task": "regression", "id_column": "file"}
    p = image_params(data)
    if task == "regression":
        p["evaluate"] = {"primary": "rmse"}
    make_repo(repo, p)
    out = sh(repo, "dvc", "repro")
    assert {"prepare", "finetune@vit", "embed@vit_ft", "embed@vit_pt", "head@svm", "evaluate"} <= ran(out)
    art = repo / "artifacts"
    ds = pd.read_parquet(art / "data/dataset.parquet")
    assert list(ds.columns) == ["id", "image", "image_sha", "label", "split"] and len(ds) == 48
    import zarr
    assert zarr.open_array(str(art / "embeddings/vit_pt/vectors.zarr"), mode="r").shape == (48, 32)
    assert (art / "finetune/vit/model/model.safetensors").exists()
    metrics = json.loads((art / "evaluate/metrics.json").read_text())
    assert set(metrics) == {"mlp-vit", "vit_ft-svm", "vit_pt-svm", "ensemble", "ensemble_valid", "ensemble_vs_best"}
    if task == "regression":
        # scores come back on the original scale (0..100), RMSE reported on it
        test = pd.read_parquet(art / "heads/svm/vit_pt/preds.parquet")
        assert test["score"].between(0, 100).all() and test["score"].max() > 1
        assert 0 < metrics["vit_pt-svm"]["rmse"] < 3 * ds["label"].std()
    else:
        assert metrics["vit_pt-svm"]["accuracy"] >= 0.75  # bright vs dark is easy even for random features
    # a changed image reruns prepare and what depends on the data, the unchanged pretrained cache does not
    from PIL import Image
    first = repo / ds["image"][0]
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(first)
    out = sh(repo, "dvc", "repro")
    assert {"prepare", "finetune@vit", "embed@vit_pt"} <= ran(out) and "pretrained@vit" not in ran(out)
    # predict on image paths, no retraining
    pd.DataFrame({"image": ds["image"].str.removeprefix("data/")}).to_csv(repo / "data" / "new.csv", index=False)
    sh(repo, "python", "-m", "stages.predict", "data/new.csv", "--out", "pred.csv", "--text-column", "image")
    assert len(pd.read_csv(repo / "pred.csv")) == 48


def test_prepare_stage_on_images_runs_without_torch(tmp_path):
    """prepare checks, hashes and splits images: importing torch for that cost 2 s and 600 MB of peak RSS."""
    write_pngs(tmp_path / "data" / "imgs", n=24)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(image_params({"source": "folder", "path": "data/imgs"})))
    r, loaded = modules_after(tmp_path, ["stages.prepare"], ("torch", "timm", "torchvision", "transformers"),
                              pythonpath=ROOT)
    assert r.returncode == 0 and loaded == [], r.stdout + r.stderr[-2000:]
    assert len(pd.read_parquet(tmp_path / "artifacts/data/dataset.parquet")) == 24


def test_missing_and_unreadable_images_are_named(tmp_path):
    from pipeline.data.prepare import prepare_dataset
    from pipeline.params import DataParams

    table = write_pngs(tmp_path, n=24)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    table.loc[3, "file"] = "nowhere.png"
    table.loc[5, "file"] = "broken.png"
    table.to_csv(tmp_path / "t.csv", index=False)
    cfg = DataParams(source="file", path=str(tmp_path / "t.csv"), image_column="file", on_bad_rows="error")
    with pytest.raises(PipelineError, match=r"missing_image_file: 1 rows \(first: \[3\], files \['[^']*/nowhere\.png'\]\); "
                                            r"unreadable_image: 1 rows \(first: \[5\], files \['[^']*/broken\.png'\]\)"):
        prepare_dataset(cfg, 0)
    df, _, report = prepare_dataset(cfg.model_copy(update={"on_bad_rows": "drop"}), 0)
    assert len(df) == 22 and report["dropped"]["missing_image_file"] == 1 and report["dropped"]["unreadable_image"] == 1
    assert (df["image_sha"].str.len() == 16).all()


@pytest.mark.parametrize("escape", ["../secret.png", "ABS", "link.png"])
def test_image_paths_outside_the_root_are_refused(tmp_path, escape):
    """`../`, absolute paths and symlinks out of image_root were followed (/etc/passwd was opened)."""
    from pipeline.data.prepare import prepare_dataset
    from pipeline.params import DataParams

    root = tmp_path / "imgs"
    table = write_pngs(root, n=24)
    (tmp_path / "secret.png").write_bytes((root / table.loc[0, "file"]).read_bytes())
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    table.loc[4, "file"] = str(tmp_path / "secret.png") if escape == "ABS" else escape
    table.to_csv(root / "t.csv", index=False)
    cfg = DataParams(source="file", path=str(root / "t.csv"), image_column="file", on_bad_rows="drop")
    with pytest.raises(PipelineError, match=r"t\.csv: 1 image paths lead outside .*imgs: \['[^']*(secret|link)\.png'\]"):
        prepare_dataset(cfg, 0)


def test_symlinks_out_of_an_image_folder_are_refused(tmp_path):
    from pipeline.data.prepare import prepare_dataset
    from pipeline.params import DataParams

    write_pngs(tmp_path / "imgs", n=24)
    (tmp_path / "imgs" / "dark" / "passwd.png").symlink_to("/etc/passwd")
    with pytest.raises(PipelineError, match=r"1 image paths lead outside .*imgs: \['[^']*dark/passwd\.png'\]"):
        prepare_dataset(DataParams(source="folder", path=str(tmp_path / "imgs"), on_bad_rows="drop"), 0)


def test_pretrained_file_is_loaded_and_checked(tmp_path):
    import timm
    from safetensors.torch import save_file

    from pipeline.models.backbones import make_backbone
    from pipeline.params import BackboneParams

    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY_VIT)
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    cfg = BackboneParams(modality="image", name="vit_tiny_patch16_224", model_kwargs=TINY_VIT,
                         pretrained_file=str(tmp_path / "w.safetensors"))
    enc = make_backbone(cfg)
    assert all(np.array_equal(v.numpy(), state[k].numpy()) for k, v in enc.model.state_dict().items())
    assert enc.data_config["input_size"] == (3, 16, 16) and len(enc.blocks()) == 2
    state.pop("blocks.1.mlp.fc2.weight")  # a partial checkpoint must not load silently
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(PipelineError, match="partial|missing"):
        make_backbone(cfg.model_copy(update={"pretrained_file": str(tmp_path / "partial.safetensors")}))
    with pytest.raises(PipelineError, match="file not found"):
        make_backbone(cfg.model_copy(update={"pretrained_file": str(tmp_path / "none.safetensors")}))


def test_image_params_are_checked():
    from pipeline.params import Params

    p = image_params({"source": "folder", "path": "x"})
    p["backbones"]["vit"]["modality"] = "text"
    with pytest.raises(Exception, match="modality"):
        Params.model_validate(p)
    p = image_params({"source": "folder", "path": "x"})
    p["finetune"]["scheme"] = "lora"
    with pytest.raises(Exception, match="for text backbones"):
        Params.model_validate(p)


def test_random_init_backbone_is_drawn_once_and_reused(tmp_path, monkeypatch):
    """A timm backbone without pretrained_file: the pretrained stage saves the weights it drew, so embedding
    twice and predict's encoder give identical vectors (they used to draw fresh weights every time)."""
    from types import SimpleNamespace

    import torch

    from pipeline import paths
    from pipeline.data.inputs import write_inputs
    from pipeline.data.prepare import prepare_dataset
    from pipeline.cache.embed import embed_frame, run_embed, source_encoder
    from pipeline.io import write_json
    from pipeline.params import Params
    from pipeline.cache.store import read_embeddings
    from stages.pretrained import _run as run_pretrained

    monkeypatch.chdir(tmp_path)
    write_pngs(tmp_path / "data" / "imgs", n=12)
    params = Params.model_validate(image_params({"source": "folder", "path": "data/imgs"}))
    df, task, _ = prepare_dataset(params.data, params.seed)
    paths.DATA.mkdir(parents=True)
    paths.INPUTS.mkdir(parents=True)
    write_inputs(paths.INPUTS, df)
    df.to_parquet(paths.DATA / "dataset.parquet", index=False)
    write_json(paths.DATA / "task.json", task.to_dict())
    paths.pretrained("vit").mkdir(parents=True)
    run_pretrained(params, SimpleNamespace(backbone="vit"), paths.pretrained("vit"))
    assert (paths.pretrained("vit") / "model.safetensors").is_file()
    runs = []
    for i in range(2):
        (tmp_path / f"emb{i}").mkdir()
        run_embed(params, "vit_pt", tmp_path / f"emb{i}")
        runs.append(read_embeddings(tmp_path / f"emb{i}")[0])
    assert np.array_equal(runs[0], runs[1])
    (tmp_path / "emb2").mkdir()  # a rerun on the same images reuses every vector of the previous store
    again = run_embed(params, "vit_pt", tmp_path / "emb2", previous=tmp_path / "emb0")
    assert (again["reused"], again["embedded"]) == (len(df), 0)
    assert np.array_equal(read_embeddings(tmp_path / "emb2")[0], runs[0])
    X = embed_frame(source_encoder(params, "vit_pt"), df["image"].tolist(), params.embed, torch.device("cpu"))
    assert np.array_equal(X, runs[0])  # what predict computes for the same images
