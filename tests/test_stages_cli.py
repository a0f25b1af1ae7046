"""Stage entry points: bad input is one line on stderr naming the key/file, exit code 2, no output folder."""
import os
import subprocess
import sys

import pytest
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


FREEZES = """
import atexit, gc, runpy, sys
freeze, counts = gc.freeze, []
gc.freeze = lambda: freeze() or counts.append(gc.get_freeze_count())
atexit.register(lambda: print("frozen", *counts, file=sys.stderr))
sys.argv = ["stages.check"]
runpy.run_module("stages.check", run_name="__main__")
"""


def test_a_stage_freezes_its_objects_before_its_work_and_before_the_interpreter_shuts_down(tmp_path):
    """The garbage collections during the work and at shutdown then skip what the imports made
    (benchmarks/exit.py: 1.3 s of an embed stage's exit); the stage's outputs are all written by the second."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    r = subprocess.run([sys.executable, "-c", FREEZES], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "artifacts/names/sources.json").is_file()
    counts = [int(c) for c in r.stderr.split("frozen")[-1].split()]
    # check alone: about 28k objects after its imports, and those its work made on top at the end
    assert len(counts) == 2 and 10_000 < counts[0] < counts[1], counts


def test_bad_data_file_exit_2(tmp_path):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(source="file", path="missing.csv")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    r = run_stage(tmp_path, "stages.prepare")
    assert r.returncode == 2 and "error: prepare: missing.csv: file not found" in r.stderr


def _params(tmp_path, **data):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    if data:
        p["data"] = {"source": "file", "path": "t.csv", "task": "binary", **data}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    return p


def _table(tmp_path, labels):
    lines = ["id,text,label"] + [f"{i},text number {i},{lab}" for i, lab in enumerate(labels)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")


def case_gamma(tmp_path):
    p = _params(tmp_path)
    p["heads"]["svm"]["gamma"] = "sclae"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    return ["stages.prepare"], "params.yaml: heads.svm.gamma"


def case_single_class(tmp_path):
    _params(tmp_path, classes=["a", "b"])
    _table(tmp_path, ["a"] * 30)
    return ["stages.prepare"], "the rows have 1 class ['a'] of data.classes ['a', 'b']"


def case_max_rows_1(tmp_path):
    _params(tmp_path, max_rows=1)
    _table(tmp_path, ["a", "b"] * 15)
    return ["stages.prepare"], "data.max_rows=1: cannot subsample 30 rows"


def case_unknown_top_level_key(tmp_path):
    p = _params(tmp_path)
    p["ensemble_members"] = ["mlp-minilm"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    return ["stages.check"], "params.yaml: ensemble_members: unknown key"


def case_predict_header_only(tmp_path):
    _params(tmp_path)
    (tmp_path / "new.csv").write_text("id,text\n")
    return ["stages.predict", "new.csv", "--out", "p.csv"], "new.csv: no rows to predict"


def case_predict_missing_id_column(tmp_path):
    _params(tmp_path)
    (tmp_path / "new.csv").write_text("text\nnice film\n")
    return ["stages.predict", "new.csv", "--out", "p.csv", "--id-column", "id"], \
        "new.csv: missing --id-column 'id'; columns are ['text']"


def case_predict_out_in_missing_folder(tmp_path):
    _params(tmp_path)
    (tmp_path / "new.csv").write_text("id,text\n1,nice film\n")
    return ["stages.predict", "new.csv", "--out", "nowhere/p.csv"], "--out nowhere/p.csv: folder nowhere does not exist"


@pytest.mark.parametrize("case", [case_gamma, case_single_class, case_max_rows_1, case_unknown_top_level_key,
                                  case_predict_header_only, case_predict_missing_id_column,
                                  case_predict_out_in_missing_folder], ids=lambda c: c.__name__[5:])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, case):
    """Each of these gave a traceback (or ran on, or failed only after all inference)."""
    cmd, message = case(tmp_path)
    r = run_stage(tmp_path, *cmd)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(errors) == 1 and message in errors[0], r.stderr[-2000:]
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "p.csv").exists()
