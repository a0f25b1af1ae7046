"""The embed stage's writer streams shards into a sharded Zarr v3 store and resumes a killed run from its last
finished shard: the result equals an uninterrupted run bit for bit, and a partial for other inputs is deleted."""
import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.cache.store import read_embeddings, write_embeddings
from pipeline.cache.stream import ShardWriter, partial_folder
from tests.conftest import ROOT


def files(store) -> list:
    return sorted(p for p in (store / "vectors.zarr").rglob("*") if p.is_file() and p.name != "zarr.json")


def test_a_store_is_one_file_per_shard_and_a_killed_write_resumes_from_its_last_shard(tmp_path, caplog):
    X = np.random.default_rng(0).normal(size=(100, 6)).astype(np.float32)
    index = pd.DataFrame({"id": [f"r{i}" for i in range(100)], "input_hash": [f"h{i}" for i in range(100)]})
    write_embeddings(tmp_path / "whole", X, index, chunk_rows=8, shard_rows=32)
    assert len(files(tmp_path / "whole")) == 4  # 100 rows: 4 shards of 32 rows (13 chunk files unsharded)
    assert np.array_equal(read_embeddings(tmp_path / "whole")[0], X)

    part = partial_folder(tmp_path / "final", "k", index["input_hash"], 32, 8, "float32")
    w = ShardWriter(part, 100, "float32", 32, 8)
    for s in w.pending()[:2]:
        w.write(s, X[slice(*w.rows(s))])
    w.arr[64:96] = X[64:96]  # shard 2 written but not recorded: killed between the two
    with caplog.at_level(logging.INFO):
        w = ShardWriter(part, 100, "float32", 32, 8)
    assert w.pending() == [2, 3] and "from shard 2 of 4" in caplog.text
    for s in w.pending():
        w.write(s, X[slice(*w.rows(s))])
    (tmp_path / "out").mkdir()
    w.finish(tmp_path / "out", 6)
    import zarr
    assert np.array_equal(zarr.open_array(str(tmp_path / "out/vectors.zarr"))[:], X) and not part.exists()
    assert len(files(tmp_path / "out")) == 4

    stale = partial_folder(tmp_path / "final", "k", index["input_hash"], 32, 8, "float32")
    ShardWriter(stale, 100, "float32", 32, 8).write(0, X[:32])
    other = partial_folder(tmp_path / "final", "k", index["input_hash"][:-1], 32, 8, "float32")
    assert other != stale  # other inputs: another partial, and the stale one is deleted, never resumed
    assert ShardWriter(other, 99, "float32", 32, 8).pending() == [0, 1, 2, 3] and not stale.exists()


CHILD = """
import os, signal, sys
from pathlib import Path
import yaml
from pipeline.params import Params
from pipeline.cache import stream
from pipeline.cache.embed import run_embed

mark = stream.ShardWriter._mark_done
def killing(self, s):
    if len(self.done) == 3:  # shard 3's vectors are written, not yet recorded: SIGKILL mid-shard
        os.kill(os.getpid(), signal.SIGKILL)
    mark(self, s)
stream.ShardWriter._mark_done = killing
out = Path(sys.argv[1])
out.mkdir()
run_embed(Params.model_validate(yaml.safe_load(open("params.yaml"))), "minilm_pt", out)
"""


@pytest.mark.slow
def test_a_killed_embed_resumes_from_its_last_shard_and_equals_an_uninterrupted_one(tmp_path, tiny_params,
                                                                                   monkeypatch, caplog):
    import pipeline.cache.embed as embed
    from pipeline.params import Params

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    words = "great awful plot acting boring superb dull moving funny slow tense warm".split()
    texts = [" ".join(rng.choice(words, 3 + i % 9)) for i in range(150)]
    (tmp_path / "artifacts/inputs").mkdir(parents=True)
    pd.DataFrame({"id": [f"r{i}" for i in range(150)], "text": texts,
                  "input_hash": [f"h{i}" for i in range(150)]}).to_parquet("artifacts/inputs/inputs.parquet")
    tiny_params["embed"].update(shard_rows=16, chunk_rows=8, batch_size=8)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", CHILD, "killed"], env=env, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    progress = list(tmp_path.glob("artifacts/.tmp/*.partial-*/progress.json"))
    assert len(progress) == 1 and json.loads(progress[0].read_text())["done"] == [0, 1, 2]

    params = Params.model_validate(tiny_params)
    sizes = []
    frame = embed.embed_frame
    monkeypatch.setattr(embed, "embed_frame", lambda enc, items, *a: sizes.append(len(items)) or frame(enc, items, *a))
    (tmp_path / "resumed").mkdir()
    with caplog.at_level(logging.INFO):
        got = embed.run_embed(params, "minilm_pt", tmp_path / "resumed")
    assert "from shard 3 of 10" in caplog.text and (got["resumed"], got["embedded"]) == (48, 102)
    assert max(sizes) == 16 and sum(sizes) == 102  # one shard at a time, never the whole matrix
    assert not list(tmp_path.glob("artifacts/.tmp/*.partial-*"))
    (tmp_path / "whole").mkdir()
    assert embed.run_embed(params, "minilm_pt", tmp_path / "whole")["embedded"] == 150
    X, index = read_embeddings(tmp_path / "resumed")
    Y, full = read_embeddings(tmp_path / "whole")
    assert np.array_equal(X, Y) and index.equals(full) and len(files(tmp_path / "whole")) == 10
