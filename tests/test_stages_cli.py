"""Stage entry points: bad input is one line on stderr naming the key/file, exit code 2, no output folder."""
import os
import subprocess
import sys

import yaml

from tests.conftest import ROOT


def run_stage(tmp_path, module, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True)


def test_bad_param_is_one_line_exit_2(tmp_path):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["heads"]["svm"]["C"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    r = run_stage(tmp_path, "stages.prepare")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: prepare: params.yaml: heads.svm.C: Input should be greater than 0")
    assert not (tmp_path / "artifacts" / "data").exists()


def test_unknown_stage_id_names_allowed_values(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    r = run_stage(tmp_path, "stages.embed", "bert_ft")
    assert r.returncode == 2
    assert "sources.bert_ft: not in params.yaml; allowed: ['minilm_ft', 'minilm_pt']" in r.stderr


def test_bad_data_file_exit_2(tmp_path):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(source="file", path="missing.csv")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    r = run_stage(tmp_path, "stages.prepare")
    assert r.returncode == 2 and "error: prepare: missing.csv: file not found" in r.stderr
