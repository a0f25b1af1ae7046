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


def test_predict_warns_when_auto_precision_resolves_otherwise_than_for_the_cache(tmp_path, monkeypatch, caplog):
    """precision: auto is bf16 on a CPU with bf16 units only: new rows embedded on another machine than the
    cache's are at another precision, which predict says instead of serving it silently."""
    import logging

    import torch

    from pipeline import devices
    from pipeline.io import write_json
    from pipeline.predict.serve import _warn_if_other_precision
    from tests.test_devices import EPYC_AVX2, XEON_AMX

    monkeypatch.chdir(tmp_path)
    p = Params.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text()))
    (tmp_path / "artifacts/embeddings/minilm_pt").mkdir(parents=True)
    write_json(tmp_path / "artifacts/embeddings/minilm_pt/key.json",
               {"key": "k", "parts": {"precision": "bf16", "device": "cpu"}})  # made on the Xeon
    monkeypatch.setattr(devices, "_host_cpuinfo", lambda: XEON_AMX)
    with caplog.at_level(logging.WARNING, logger="pipeline.predict.serve"):
        _warn_if_other_precision(p, "minilm_pt", torch.device("cpu"))
    assert "cache was made at" not in caplog.text
    monkeypatch.setattr(devices, "_host_cpuinfo", lambda: EPYC_AVX2)  # served on the AVX2 EPYC: fp32
    with caplog.at_level(logging.WARNING, logger="pipeline.predict.serve"):
        _warn_if_other_precision(p, "minilm_pt", torch.device("cpu"))
    assert "at fp32 on cpu, but its cache was made at bf16 on cpu" in caplog.text
