"""predict refuses artifacts whose recorded params differ from params.yaml (pipeline/predict/staleness.py)."""
import pytest
import yaml

from pipeline import PipelineError
from pipeline.io import write_params
from pipeline.params import Params
from pipeline.predict.staleness import check_fresh, expected_records, stale_keys
from tests.conftest import ROOT


def test_stale_keys_name_what_changed(tmp_path):
    p = Params.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text()))
    write_params(tmp_path, backbone=p.backbones["minilm"], embed=p.embed)
    assert stale_keys(tmp_path, backbone=p.backbones["minilm"], embed=p.embed) == []
    changed = p.backbones["minilm"].model_copy(update={"pooling": "cls", "max_length": 32})
    assert stale_keys(tmp_path, backbone=changed, embed=p.embed) == ["backbone.max_length", "backbone.pooling"]
    assert stale_keys(tmp_path / "nope", embed=p.embed) == ["(not built: no params.yaml)"]


def test_every_folder_predict_reads_is_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = Params.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text()))
    members = p.ensemble.members
    parts = {"minilm_ft-svm": ("minilm_ft", "svm"), "minilm_pt-svm": ("minilm_pt", "svm"), "both-svm": ("both", "svm")}
    want = expected_records(p, members, parts.get)
    assert {str(f) for f in want} == {
        "artifacts/data", "artifacts/ensemble", "artifacts/finetune/minilm", "artifacts/pretrained/minilm",
        "artifacts/embeddings/minilm_ft", "artifacts/embeddings/minilm_pt", "artifacts/heads/svm/minilm_ft",
        "artifacts/heads/svm/minilm_pt", "artifacts/heads/svm/both"}
    for folder, sections in want.items():
        folder.mkdir(parents=True)
        write_params(folder, **sections)
    check_fresh(p, members, parts.get)
    p.backbones["minilm"].pooling = "cls"
    with pytest.raises(PipelineError, match=r"artifacts made with other params than params\.yaml: "
                                            r"artifacts/finetune/minilm \(backbone\.pooling\); .*run `dvc repro` first"):
        check_fresh(p, members, parts.get)
