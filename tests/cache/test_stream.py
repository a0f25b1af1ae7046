"""The embed stage's writer streams shards into a sharded Zarr v3 store and resumes a killed run from its last
finished shard: the result equals an uninterrupted run bit for bit, and a partial for other inputs is deleted.
Under torchrun, ranks split the shards, keep one progress file each, and make the store one process makes."""
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import PipelineError
from pipeline.cache.store import read_embeddings, write_embeddings
from pipeline.cache.stream import ShardWriter, assign, partial_folder, partial_name, read_progress, shared_writer
from tests.conftest import ROOT

ROW_GROUP = 7  # small_corpus's Parquet row groups: shards of 16 rows span several


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


def test_a_partial_is_named_alike_from_arrow_strings_and_from_python_ones():
    """The Arrow path hashes the joined buffers (of one array, or of several one after another); it must give
    the name the plain loop over strings gives."""
    import pyarrow as pa

    hashes = [f"{i:064x}" for i in range(70_000)] + ["", "é"]  # two batches; an empty and a non-ASCII string
    name = lambda values: partial_name(Path("a/b"), "k", values, 16, 8, "float32")  # noqa: E731
    assert name(pa.array(hashes)) == name(hashes)
    assert name(pa.chunked_array([pa.array(hashes[:5]), pa.array(hashes[5:])]).cast(pa.large_string())) == name(hashes)
    assert name(pa.array(hashes).slice(3)) == name(hashes[3:]) != name(hashes)
    # the embed stage's form: inputs.parquet's row groups, one Arrow array after another
    assert name(iter([pa.array(hashes[:65_536]), pa.array(hashes[65_536:])])) == name(hashes)


def small_corpus(folder, params: dict, n: int) -> None:
    """`folder`/artifacts/inputs with n short texts of 3-11 words (ids r<i>, input hashes i in 32 hex digits, row
    groups of ROW_GROUP rows), and
    `folder`/params.yaml: `params` with 16-row shards of 8-row chunks (n = 150: 10 shards)."""
    rng = np.random.default_rng(0)
    words = "great awful plot acting boring superb dull moving funny slow tense warm".split()
    texts = [" ".join(rng.choice(words, 3 + i % 9)) for i in range(n)]
    (folder / "artifacts/inputs").mkdir(parents=True, exist_ok=True)
    # 32 hex digits, as prepare's text hashes; row groups of 7 rows, so shards and groups do not line up
    pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": texts, "input_hash": [f"{i:032x}" for i in range(n)]}
                 ).to_parquet(folder / "artifacts/inputs/inputs.parquet", row_group_size=ROW_GROUP)
    params["embed"].update(shard_rows=16, chunk_rows=8, batch_size=8)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


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
    small_corpus(tmp_path, tiny_params, 150)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", CHILD, "killed"], env=env, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    progress = list(tmp_path.glob("artifacts/.tmp/*.partial-*/progress-0.json"))
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


def test_rows_appended_rewrite_only_their_shards_the_others_are_the_old_files(tmp_path, tiny_params, monkeypatch):
    """150 rows (10 shards of 16, the last holding 6), then 30 appended and one text changed: the full shards
    that hold the same rows in the same order are the old store's files, copied; the one with the changed row,
    the old last shard (now full) and the new ones are written. The store equals the one rows copied one by
    one give, bit for bit. A duplicate text does not stop its shard from being copied; rows that moved (one
    removed before them) are never a copied shard."""
    import pipeline.cache.embed as embed
    from pipeline.params import Params

    monkeypatch.chdir(tmp_path)
    inputs = tmp_path / "artifacts/inputs/inputs.parquet"

    def corpus(n: int) -> pd.DataFrame:  # row 20 (shard 1) repeats row 3's text: a duplicate in another shard
        small_corpus(tmp_path, tiny_params, n)
        df = pd.read_parquet(inputs)
        df.loc[20, ["text", "input_hash"]] = df.loc[3, ["text", "input_hash"]].to_list()
        df.to_parquet(inputs, row_group_size=ROW_GROUP)
        return df
    corpus(150)
    params = Params.model_validate(tiny_params)
    (tmp_path / "old").mkdir()
    embed.run_embed(params, "minilm_pt", tmp_path / "old")
    df = corpus(180)
    df.loc[40, ["text", "input_hash"]] = ["a changed review", "f" * 32]  # shard 2
    df.to_parquet(inputs, row_group_size=ROW_GROUP)
    (tmp_path / "new").mkdir()
    got = embed.run_embed(params, "minilm_pt", tmp_path / "new", previous=tmp_path / "old")
    assert (got["shards"], got["shards_copied"], got["reused"], got["embedded"]) == (12, 8, 149, 31)
    old, new = store_bytes(tmp_path / "old"), store_bytes(tmp_path / "new")
    assert sorted(k for k in new if k.startswith("vectors.zarr/c/") and new[k] == old.get(k)) == \
        [f"vectors.zarr/c/{s}/0" for s in (0, 1, 3, 4, 5, 6, 7, 8)]

    monkeypatch.setattr(ShardWriter, "carry", lambda *a: False)  # every reused row decoded and encoded again
    (tmp_path / "rows").mkdir()
    again = embed.run_embed(params, "minilm_pt", tmp_path / "rows", previous=tmp_path / "old")
    assert (again["shards_copied"], again["reused"], again["embedded"]) == (0, 149, 31)
    assert store_bytes(tmp_path / "rows") == new

    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    df.iloc[1:].to_parquet(inputs, row_group_size=ROW_GROUP)  # the first row removed: each row reused, one up
    (tmp_path / "shifted").mkdir()
    got = embed.run_embed(params, "minilm_pt", tmp_path / "shifted", previous=tmp_path / "new")
    assert (got["shards_copied"], got["reused"], got["embedded"]) == (0, 179, 0)
    assert np.array_equal(read_vectors(tmp_path / "shifted"), read_vectors(tmp_path / "new")[1:])


def test_ranks_get_disjoint_round_robin_shares_of_the_pending_shards():
    pending = [3, 4, 5, 6, 7, 8, 9]
    parts = [assign(pending, r, 3) for r in range(3)]
    assert parts == [[3, 6, 9], [4, 7], [5, 8]] and sorted(sum(parts, [])) == pending
    assert assign([0, 1], 0, 1) == [0, 1] and [assign([0], r, 2) for r in range(2)] == [[0], []]  # rank 1 idles


def test_per_rank_progress_and_a_killed_two_rank_write_resumed_by_one_or_two(tmp_path):
    X = np.random.default_rng(1).normal(size=(100, 6)).astype(np.float32)
    part = partial_folder(tmp_path / "final", "k", [f"h{i}" for i in range(100)], 16, 8, "float32")
    no_barrier = lambda: None  # noqa: E731 - one process plays the ranks in turn, which a barrier would order
    w0, mine0 = shared_writer(part, 100, "float32", 16, 8, 0, 2, lambda: 6, no_barrier)
    w1, mine1 = shared_writer(part, 100, "float32", 16, 8, 1, 2, lambda: 6, no_barrier)
    assert (mine0, mine1) == ([0, 2, 4, 6], [1, 3, 5]) and w1.arr.shape == (100, 6)
    for w, s in [(w0, 0), (w1, 1), (w0, 2)]:  # then both are killed
        w.write(s, X[slice(*w.rows(s))])
    assert sorted(p.name for p in part.glob("progress*")) == ["progress-0.json", "progress-1.json"]
    assert read_progress(part) == {0, 1, 2} and json.loads((part / "progress-1.json").read_text())["done"] == [1]

    one = ShardWriter(part, 100, "float32", 16, 8)  # resumed by one process: the union of both ranks' files
    assert one.pending() == [3, 4, 5, 6]
    one.write(3, X[48:64])
    assert json.loads((part / "progress-0.json").read_text())["done"] == [0, 2, 3]  # its old shards kept
    with pytest.raises(PipelineError, match=r"shards \[4, 5, 6\] of 7 were never written"):
        one.finish(tmp_path, 6)  # never a store with holes

    w0, mine0 = shared_writer(part, 100, "float32", 16, 8, 0, 2, lambda: 6, no_barrier)  # resumed by two again
    w1, mine1 = shared_writer(part, 100, "float32", 16, 8, 1, 2, lambda: 6, no_barrier)
    assert (mine0, mine1) == ([4, 6], [5])
    for w, mine in [(w0, mine0), (w1, mine1)]:
        for s in mine:
            w.write(s, X[slice(*w.rows(s))])
    assert json.loads((part / "progress-1.json").read_text())["done"] == [1, 5]
    (tmp_path / "out").mkdir()
    w0.finish(tmp_path / "out", 6)
    assert np.array_equal(read_vectors(tmp_path / "out"), X) and not part.exists()


def test_a_rank_that_cannot_see_rank_0s_partial_store_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="rank 1: .* not found, though rank 0 created it: on several nodes"):
        ShardWriter(tmp_path / "elsewhere", 100, "float32", 16, 8, rank=1)


def read_vectors(store) -> np.ndarray:
    import zarr
    return zarr.open_array(str(store / "vectors.zarr"), mode="r")[:]


def store_bytes(store) -> dict:
    """Every file of the store that the bit-for-bit claim covers (summary.json holds timings) -> its bytes."""
    paths = [*(store / "vectors.zarr").rglob("*"), store / "index.parquet", store / "key.json"]
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in paths if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(ranks: int) -> list[str]:
    return ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(free_port())]


def embed_stage(folder, into: str, launcher: list[str] = (), start_from: str | None = None) -> str:
    """The embed stage of minilm_pt in `folder` (under `launcher`, gloo ranks of 1 thread each; none: one process
    of 1 thread) on top of the store `folder`/`start_from` (none: from no store); the store is copied to
    `folder`/`into` -> the log."""
    store = folder / "artifacts/embeddings/minilm_pt"
    shutil.rmtree(store, ignore_errors=True)
    if start_from:
        shutil.copytree(folder / start_from, store)
    r = subprocess.run([sys.executable, *launcher, "-m", "stages.embed", "minilm_pt"], cwd=folder, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.copytree(store, folder / into)
    return r.stderr


@pytest.mark.slow
def test_two_torchrun_ranks_split_the_shards_and_write_the_store_one_process_writes(tmp_path, tiny_params):
    small_corpus(tmp_path, tiny_params, 150)  # 10 shards of 16 rows

    def embed(ranks: int, into: str, start_from: str | None = None) -> str:
        return embed_stage(tmp_path, into, torchrun(ranks) if ranks > 1 else [], start_from)

    log = embed(2, "two")
    embed(1, "one")
    assert store_bytes(tmp_path / "two") == store_bytes(tmp_path / "one")
    assert len(store_bytes(tmp_path / "one")) == 13  # zarr.json, 10 shard files, index, key
    s = json.loads((tmp_path / "two/summary.json").read_text())
    assert (s["ranks"], s["embedded"], s["reused"]) == (2, 150, 0)
    assert [(r["rank"], r["shards"]) for r in s["per_rank"]] == [(0, [0, 2, 4, 6, 8]), (1, [1, 3, 5, 7, 9])]
    assert [r["embedded"] for r in s["per_rank"]] == [80, 70]  # shard 9 holds the last 6 rows
    assert "rank 0 of 2 wrote shards [0, 2, 4, 6, 8]" in log and "rank 1 of 2 wrote shards [1, 3, 5, 7, 9]" in log
    assert not list((tmp_path / "artifacts/.tmp").iterdir())

    # incremental: 30 new rows; each rank reuses its shards' old rows from the previous store by input hash
    small_corpus(tmp_path, tiny_params, 180)
    embed(2, "two+", start_from="two")
    embed(1, "one+", start_from="one")
    assert store_bytes(tmp_path / "two+") == store_bytes(tmp_path / "one+")
    s = json.loads((tmp_path / "two+/summary.json").read_text())
    assert [(r["embedded"], r["reused"]) for r in s["per_rank"]] == [(16, 80), (14, 70)]  # rows 150-179 new
    assert np.array_equal(read_vectors(tmp_path / "two+")[:150], read_vectors(tmp_path / "two"))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="accelerate is not installed")
def test_accelerate_launch_splits_the_shards_the_same_way(tmp_path, tiny_params):
    """`accelerate launch --multi_gpu` starts torch's launcher (gloo ranks on a CPU); `--cpu` would start one."""
    small_corpus(tmp_path, tiny_params, 150)
    log = embed_stage(tmp_path, "two", ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                                        "--main_process_port", str(free_port())])
    embed_stage(tmp_path, "one")
    assert store_bytes(tmp_path / "two") == store_bytes(tmp_path / "one")
    s = json.loads((tmp_path / "two/summary.json").read_text())
    assert [r["shards"] for r in s["per_rank"]] == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]], log[-2000:]


def test_shards_reported_through_the_process_group_count_as_written(tmp_path):
    """On a shared filesystem rank 0 may not see another node's new progress file yet: the shards the ranks
    reported once written and recorded count too; a shard nobody reported or recorded still refuses."""
    X = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    part = partial_folder(tmp_path / "final", "k", [f"h{i}" for i in range(40)], 16, 8, "float32")
    w = ShardWriter(part, 40, "float32", 16, 8)
    for s in w.pending():
        w.write(s, X[slice(*w.rows(s))])
    (part / "progress-0.json").write_text(json.dumps({"done": [0, 2]}))  # shard 1's record not visible
    (tmp_path / "out").mkdir()
    from pipeline import PipelineError
    with pytest.raises(PipelineError, match=r"shards \[1\] of 3 were never written"):
        w.finish(tmp_path / "out", 3)
    w.finish(tmp_path / "out", 3, reported={1})
    import zarr
    assert np.array_equal(zarr.open_array(str(tmp_path / "out/vectors.zarr"))[:], X)
