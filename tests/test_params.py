import re

import pytest
import yaml

from pipeline.params import Params, ParamsError, load_params
from tests.conftest import ROOT


def write(tmp_path, p) -> str:
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    return str(f)


def test_repo_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert "mlp-minilm" in p.model_names() and set(p.ensemble.members) <= set(p.model_names())


@pytest.mark.parametrize("edit, key", [
    (lambda p: p["finetune"].update(lrr=1e-3), r"finetune\.lrr: unknown key"),
    (lambda p: p["finetune"].update(lr=-1.0), r"finetune\.lr: .*greater than 0"),
    (lambda p: p["finetune"].update(batch_size="big"), r"finetune\.batch_size: .*integer"),
    (lambda p: p["heads"]["svm"].update(C=0), r"heads\.svm\.C: .*greater than 0"),
    (lambda p: p["heads"]["svm"].update(kind="forest"), r"heads\.svm\.kind: .*'svm'"),
    (lambda p: p["data"].update(valid_frac=0.5, test_frac=0.5), r"data: valid_frac \+ test_frac must be < 1"),
    (lambda p: p["sources"]["minilm_pt"].update(backbone="bert"), r"sources\.minilm_pt\.backbone: unknown backbone 'bert'; allowed: \['minilm'\]"),
    (lambda p: p["ensemble"].update(members=["nope"]), r"ensemble\.members: unknown model 'nope'"),
    (lambda p: p["concat"].update(both=["minilm_ft"]), r"concat\.both: needs >= 2"),
    (lambda p: p["finetune"].update(scheme="magic"), r"finetune\.scheme: .*'full'"),
    # a regression run must fail here, before any stage runs, not in evaluate after minutes of work
    (lambda p: (p["data"].update(task="regression"), p["evaluate"].update(primary="accuracy")), r"evaluate\.primary: 'accuracy' is not a regression metric; "
                                                    r"allowed: \['rmse', 'mae', 'r2'\]"),
    (lambda p: p["evaluate"].update(primary="f1"), None),
    (lambda p: p["data"].update(task="regression"), None),  # primary: null follows the task
    (lambda p: (p["data"].update(task="multiclass"), p["evaluate"].update(primary="f1")),
     r"evaluate\.primary: 'f1' is not a multiclass metric; allowed: \['f1_macro', 'accuracy', 'roc_auc_ovr'"),
    (lambda p: p["data"].update(encoding="utf-9"), r"data\.encoding: .*unknown encoding 'utf-9'"),
    (lambda p: p["data"].update(duplicates="merge"), r"data\.duplicates: .*'group'"),
    (lambda p: p["ensemble"].update(objective="auc"), r"ensemble\.objective: .*'log_loss'"),
    (lambda p: p["heads"]["svm"].update(gamma="sclae"), r"heads\.svm\.gamma.*'scale' or 'auto'"),
    (lambda p: p["ensemble"].update(members=["mlp-minilm", "both-svm", "mlp-minilm"]),
     r"ensemble\.members: members must be unique; repeated: \['mlp-minilm'\]"),
    # names become folders and stage names: no path parts, no '-' (x + y-z and x-y + z would collide)
    (lambda p: p["backbones"].update({"../../../x": p["backbones"]["minilm"]}), r"backbones: names \['\.\./\.\./\.\./x'\]"),
    (lambda p: p["sources"].update({"../../tools": p["sources"]["minilm_pt"]}), r"sources: names \['\.\./\.\./tools'\]"),
    (lambda p: p["heads"].update({"s-v": p["heads"]["svm"]}), r"heads: names \['s-v'\] must match"),
    (lambda p: p["concat"].update({"a/b": ["minilm_ft", "minilm_pt"]}), r"concat: names \['a/b'\]"),
])
def test_bad_params_name_the_key(tmp_path, edit, key):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(p)
    path = write(tmp_path, p)
    if key is None:  # a valid edit, next to the invalid ones it resembles
        load_params(path)
        return
    with pytest.raises(ParamsError, match=key) as e:
        load_params(path)
    assert path in str(e.value)


@pytest.mark.parametrize("task, primary", [("binary", "accuracy"), ("multiclass", "f1_macro"),
                                           ("multilabel", "f1_macro"), ("regression", "rmse")])
def test_primary_metric_defaults_by_task(tmp_path, task, primary):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["task"], p["evaluate"] = task, {}
    assert load_params(write(tmp_path, p)).primary_metric == primary


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_every_dvc_params_key_exists_in_params_and_schema():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = set()
    for stage in dvc["stages"].values():
        body = stage.get("do", stage)
        for k in body.get("params", []):
            keys.add(k)
    assert keys, "dvc.yaml declares no params"
    ids = {"key": list(params["backbones"]) + list(params["sources"]),
           "item.backbone": [s["backbone"] for s in params["sources"].values()],
           "item.head": list(params["heads"]), "item.features": list(params["concat"])}
    checked = 0
    for k in keys:
        m = re.search(r"\$\{([^}]+)\}", k)
        for value in (ids[m.group(1)] if m else [None]):
            path = k.replace(m.group(0), value) if m else k
            head = path.split(".")[0]
            if m and not _has(params, path):
                continue  # e.g. sources.${key} tried with a backbone name; some id fits, checked below
            assert _has(params, path), f"dvc.yaml param {path!r} missing from params.yaml"
            assert head in Params.model_fields, f"dvc.yaml param {path!r} not in the schema"
            checked += 1
    assert checked >= len(keys)


def _has(d, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return False
        d = d[part]
    return True
