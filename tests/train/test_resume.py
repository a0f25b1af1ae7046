"""Reliability: a fine-tune killed with SIGKILL resumes from its checkpoint to the same weights; security."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from safetensors.torch import load_file

from pipeline.params import BackboneParams
from tests.conftest import ROOT, shrink_params

pytestmark = pytest.mark.slow


def stage(repo, *args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "stages.finetune", "minilm", *args], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)


def prepared(tmp_path, name, tiny_model_dir):
    repo = tmp_path / name
    repo.mkdir()
    p = shrink_params(tiny_model_dir)
    p["data"]["max_rows"] = 2000  # ~90 steps: time to kill it mid-run
    p["finetune"].update(checkpoint_every=5, batch_size=16)
    (repo / "params.yaml").write_text(yaml.safe_dump(p))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=repo, env=env, check=True, capture_output=True)
    return repo


def test_sigkill_during_finetune_then_resume_gives_same_weights(tmp_path, tiny_model_dir):
    ref = prepared(tmp_path, "ref", tiny_model_dir)
    assert stage(ref).wait() == 0
    run = prepared(tmp_path, "run", tiny_model_dir)
    proc = stage(run)
    deadline = time.time() + 120
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((run / "checkpoints").glob("minilm-*/step-*/state.pt"))
        if found:
            ckpt = found[0]
            time.sleep(0.3)  # a few steps past the checkpoint
            break
        time.sleep(0.01)
    assert ckpt is not None and proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "artifacts" / "finetune" / "minilm").exists()
    second = stage(run)
    _, err = second.communicate()
    assert second.returncode == 0
    assert re.search(r"resumed from checkpoint at step \d+", err), err[-2000:]
    a = load_file(str(ref / "artifacts/finetune/minilm/model/model.safetensors"))
    b = load_file(str(run / "artifacts/finetune/minilm/model/model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert not list((run / "checkpoints").glob("minilm-*/step-*/state.pt"))  # removed after success


def test_security_defaults():
    assert BackboneParams(name="x").trust_remote_code is False
    src = "\n".join(p.read_text() for p in (ROOT / "pipeline").rglob("*.py"))
    loads = re.findall(r"torch\.load\(([^)]*)\)", src)
    assert loads and all("weights_only=True" in call for call in loads)
    assert "use_safetensors=True" in src and "safe_serialization=True" in src
    # stored heads are read by an allowlist unpickler: tests/heads/test_head_store.py feeds it code-running files
    assert "joblib" not in src and not re.search(r"pickle\.loads?\(", src)
