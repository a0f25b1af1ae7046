"""The inputs artifact holds what the encoders read and nothing about labels: a new split or a changed label
writes the same bytes, so DVC keeps the pretrained embeddings; a new row or text does not."""
import hashlib

import pandas as pd

from pipeline.data.inputs import inputs_frame, read_inputs, write_inputs
from pipeline.data.prepare import prepare_dataset
from pipeline.params import DataParams


def rows(n=60):
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": [f"text number {i}" for i in range(n)],
                         "label": ["pos" if i % 2 else "neg" for i in range(n)]})


def inputs_bytes(tmp_path, df, name, seed=0, **data) -> bytes:
    df.to_csv(tmp_path / "d.csv", index=False)
    prepared, _, _ = prepare_dataset(DataParams(source="file", path=str(tmp_path / "d.csv"), **data), seed=seed)
    (tmp_path / name).mkdir()
    write_inputs(tmp_path / name, prepared)
    return (tmp_path / name / "inputs.parquet").read_bytes()


def test_splits_and_labels_leave_the_inputs_bytes_unchanged(tmp_path):
    base = inputs_bytes(tmp_path, rows(), "a")
    assert inputs_bytes(tmp_path, rows(), "b", valid_frac=0.3) == base
    assert inputs_bytes(tmp_path, rows(), "c", seed=7) == base  # another split
    flipped = rows()
    flipped.loc[3, "label"] = "pos" if flipped.loc[3, "label"] == "neg" else "neg"
    assert inputs_bytes(tmp_path, flipped, "d") == base
    assert inputs_bytes(tmp_path, pd.concat([rows(), rows(61).tail(1)]), "e") != base


def test_inputs_frame_hashes_the_text(tmp_path):
    df = rows(3).assign(split="train")
    got = inputs_frame(df)
    assert list(got.columns) == ["id", "text", "input_hash"]
    assert got["input_hash"][0] == hashlib.sha256(b"text number 0").hexdigest()[:32]
    images = pd.DataFrame({"id": ["a"], "image": ["x.png"], "image_sha": ["ab12"], "label": ["1"], "split": ["test"]})
    assert inputs_frame(images).to_dict("records") == [{"id": "a", "image": "x.png", "image_sha": "ab12",
                                                        "input_hash": "ab12"}]
    (tmp_path / "i").mkdir()
    write_inputs(tmp_path / "i", df)
    assert read_inputs(tmp_path / "i").equals(got)


def test_input_rows_read_any_row_range_from_the_row_groups_that_hold_it(tmp_path, monkeypatch):
    """The embed stage reads the texts and the ids and hashes shard by shard: every range, across row-group
    boundaries, equals the frame's rows."""
    import pyarrow as pa

    from pipeline.data import inputs
    monkeypatch.setattr(inputs, "ROW_GROUP", 7)  # 50 rows: 8 row groups
    df = rows(50).assign(split="train")
    (tmp_path / "i").mkdir()
    write_inputs(tmp_path / "i", df)
    r = inputs.InputRows(tmp_path / "i")
    assert r.file.metadata.num_row_groups == 8 and r.n == 50 and r.column == "text"
    keys = r.keys()
    assert isinstance(keys, pa.Table) and keys.column_names == ["id", "input_hash"]
    assert keys["input_hash"].to_pylist() == inputs_frame(df)["input_hash"].tolist()
    assert pa.concat_tables(r.batches()).equals(keys) and r.keys(13, 29).equals(keys.slice(13, 16))
    for lo, hi in [(0, 50), (0, 7), (6, 8), (13, 29), (49, 50), (20, 20), (3, 4)]:
        assert r.items(lo, hi).tolist() == df["text"].iloc[lo:hi].tolist(), (lo, hi)
