import os

import pytest

from pipeline.io import atomic_dir


def test_atomic_dir_replaces_only_on_success(tmp_path):
    os.chdir(tmp_path)
    with atomic_dir("artifacts/x") as t:
        (t / "a").write_text("1")
    assert (tmp_path / "artifacts/x/a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir("artifacts/x") as t:
            (t / "a").write_text("2")
            raise RuntimeError("killed halfway")
    assert (tmp_path / "artifacts/x/a").read_text() == "1"  # the old complete output is untouched
    assert list((tmp_path / "artifacts/.tmp").iterdir()) == []
    with atomic_dir("artifacts/x") as t:
        (t / "b").write_text("3")
    assert sorted(p.name for p in (tmp_path / "artifacts/x").iterdir()) == ["b"]


def test_stale_tmp_of_dead_process_is_removed(tmp_path):
    os.chdir(tmp_path)
    stale = tmp_path / "artifacts/.tmp/artifacts__y.tmp-999999999"
    stale.mkdir(parents=True)
    with atomic_dir("artifacts/y"):
        pass
    assert not stale.exists()


def test_backbone_fingerprint_hashes_weights_not_paths(tiny_model_dir):
    import hashlib

    from pipeline.models.backbones import fingerprint
    from pipeline.params import BackboneParams

    fp = fingerprint(BackboneParams(name=str(tiny_model_dir)))
    assert set(fp) == {"files"} and str(tiny_model_dir) not in repr(fp)
    want = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert fp["files"]["model.safetensors"] == want
