"""prepare streams its source: batches of a few rows give the frame, report and task one batch gives, no
batch is longer than `load.BATCH`, checks that span batches (duplicate ids, duplicate texts, row numbers in
errors) see every row, and both outputs are written in row groups of `load.BATCH` rows."""
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.data import load, prepare as prep
from pipeline.data.load import DataError
from pipeline.data.prepare import prepare_dataset
from pipeline.params import DataParams

N = 60


def rows(task: str) -> pd.DataFrame:
    """N rows with what crosses batch boundaries: copies of earlier texts (one with another label), a
    repeated id, an empty text and a missing label late in the file."""
    rng = np.random.default_rng(0)
    labels = {"binary": rng.choice(["neg", "pos"], N), "multiclass": rng.choice(["a", "b", "c"], N),
              "multilabel": rng.choice(["a|b", "b", "b | a", "c"], N),
              "regression": np.round(rng.normal(size=N), 3).astype(str)}[task]
    df = pd.DataFrame({"id": [f"r{i}" for i in range(N)], "text": [f"text number {i}" for i in range(N)],
                       "label": labels})
    df.loc[[20, 41], "text"] = ["Text  number 3", "TEXT NUMBER 3"]  # copies of row 3 in later batches
    df.loc[33, "text"] = "text number 5"
    df.loc[44, "id"] = "r2"  # a repeated id, 6 batches after the first
    df.loc[50, "text"] = "   "
    df.loc[52, "label"] = None
    return df


def write(df: pd.DataFrame, path):
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_csv(path, index=False)
    return str(path)


def prepared(monkeypatch, cfg: DataParams, batch: int):
    """prepare_dataset with `load.BATCH` = batch -> (frame, task, report, longest batch checked)."""
    longest = []
    clean = prep.clean_rows

    def recording(df, *a):
        longest.append(len(df))
        return clean(df, *a)
    monkeypatch.setattr(load, "BATCH", batch)
    monkeypatch.setattr(prep, "clean_rows", recording)
    df, task, report = prepare_dataset(cfg, seed=0)
    return df, task, report, max(longest)


@pytest.mark.parametrize("task, fmt", [("binary", ".csv"), ("multiclass", ".parquet"), ("multilabel", ".jsonl"),
                                       ("regression", ".csv")])
def test_batches_of_seven_rows_prepare_what_one_batch_does(tmp_path, monkeypatch, task, fmt):
    path = write(rows(task), tmp_path / f"d{fmt}")
    cfg = DataParams(source="file", path=path, id_column="id", task=task, on_bad_rows="drop", min_class_rows=2)
    whole, t1, r1, longest1 = prepared(monkeypatch, cfg, 10**6)
    small, t7, r7, longest7 = prepared(monkeypatch, cfg, 7)
    assert longest1 == N - 2 and longest7 <= 7  # the 58 rows that pass a batch's checks, 7 at most at a time
    pd.testing.assert_frame_equal(whole, small)
    assert r1 == r7 and t1.to_dict() == t7.to_dict()
    assert r7["dropped"]["duplicate_id"] == 1 and r7["dropped"]["missing_label"] == 1
    assert r7["duplicates"]["rows_with_copies"] == 5 and len(small) == N - 3
    assert "r2" in set(small["id"]) and small["id"].is_unique  # the first r2 is kept, its repeat dropped
    groups = small[small["text"].str.lower().str.replace("  ", " ") == "text number 3"]
    assert len(groups) == 3 and groups["split"].nunique() == 1  # copies in one split, whatever their batch
    assert not small["id"].isin(["r50", "r52"]).any()


def test_bad_rows_in_later_batches_are_named_by_their_row_in_the_file(tmp_path, monkeypatch):
    path = write(rows("binary"), tmp_path / "d.csv")
    monkeypatch.setattr(load, "BATCH", 7)
    with pytest.raises(DataError, match=r"missing_or_empty_text: 1 rows \(first: \[50\]\); missing_label: 1 rows "
                                        r"\(first: \[52\]\); duplicate_id: 1 rows \(first: \[44\]\)"):
        prepare_dataset(DataParams(source="file", path=path, id_column="id"), seed=0)


def test_both_outputs_are_written_in_row_groups_of_batch_rows(tmp_path, monkeypatch):
    path = write(rows("binary"), tmp_path / "d.parquet")
    monkeypatch.setattr(load, "BATCH", 7)
    out = tmp_path / "out"
    out.mkdir()
    prep.prepare(DataParams(source="file", path=path, id_column="id", on_bad_rows="drop"), 0, out, out)
    for f in ("dataset.parquet", "inputs.parquet"):
        meta = pq.ParquetFile(out / f).metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        assert sizes == [7] * 8 + [1], (f, sizes)  # 57 rows: no group shorter than 7 but the last
    assert sorted(p.name for p in out.iterdir()) == ["dataset.parquet", "inputs.parquet"]  # no temporary left


def test_a_hf_dataset_is_read_in_slices_of_batch_rows(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    df = rows("multiclass")
    feats = datasets.Features({"id": datasets.Value("string"), "text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["a", "b", "c"])})
    codes = df["label"].map({"a": 0, "b": 1, "c": 2}).fillna(-1).astype(int)  # -1: ClassLabel's "no label"
    datasets.Dataset.from_dict({"id": df["id"], "text": df["text"], "label": codes}, features=feats).save_to_disk(
        tmp_path / "ds")
    cfg = DataParams(source="hf", path=str(tmp_path / "ds"), id_column="id", task="multiclass",
                     on_bad_rows="drop", min_class_rows=2)
    whole, _, r1, _ = prepared(monkeypatch, cfg, 10**6)
    small, _, r7, longest7 = prepared(monkeypatch, cfg, 7)
    assert longest7 <= 7 and r1 == r7 and r7["dropped"]["duplicate_id"] == 1
    pd.testing.assert_frame_equal(whole, small)


def test_copies_of_one_image_in_different_batches_share_a_split(tmp_path, monkeypatch):
    from PIL import Image

    for i in range(40):
        Image.fromarray(np.full((8, 8, 3), i * 5, np.uint8)).save(tmp_path / f"{i}.png")
    table = pd.DataFrame({"file": [f"{i}.png" for i in range(40)], "label": ["x", "y"] * 20})
    for copy in (17, 30):  # the bytes of image 3, under other names, 2 and 4 batches later
        (tmp_path / f"{copy}.png").write_bytes((tmp_path / "3.png").read_bytes())
    table.loc[36, "file"] = "nowhere.png"
    table.to_csv(tmp_path / "t.csv", index=False)
    cfg = DataParams(source="file", path=str(tmp_path / "t.csv"), image_column="file", min_class_rows=2)
    monkeypatch.setattr(load, "BATCH", 7)
    with pytest.raises(DataError, match=r"missing_image_file: 1 rows \(first: \[36\], files \['[^']*nowhere\.png'\]\)"):
        prepare_dataset(cfg, seed=0)
    df, _, report = prepare_dataset(cfg.model_copy(update={"on_bad_rows": "drop"}), seed=0)
    copies = df[df["id"].isin(["3", "17", "30"])]
    assert len(df) == 39 and report["duplicates"]["rows_with_copies"] == 3
    assert copies["image_sha"].nunique() == 1 and copies["split"].nunique() == 1


def test_edge_batches_read_as_one_file_reads_them(tmp_path, monkeypatch):
    """Found in review: a stored pandas index gives the default ids; a first batch whose ids are all missing,
    a JSONL chunk without a key, and a chunk of rotten_tomatoes' plot rows only do not break a later batch."""
    frame = rows("binary").drop(columns="id")
    frame.iloc[::2].to_parquet(tmp_path / "every-second.parquet")  # a RangeIndex 0, 2, 4, ... in metadata
    frame[frame.index % 3 > 0].to_parquet(tmp_path / "filtered.parquet")  # an index stored as a column
    for name in ("every-second", "filtered"):
        cfg = DataParams(source="file", path=str(tmp_path / f"{name}.parquet"), on_bad_rows="drop")
        small = prepared(monkeypatch, cfg, 7)[0]
        assert small["id"].tolist() == [str(i) for i in pd.read_parquet(tmp_path / f"{name}.parquet").index
                                        if str(i) in set(small["id"])]
        pd.testing.assert_frame_equal(prepared(monkeypatch, cfg, 10**6)[0], small)
    ids_first_missing = rows("binary")
    ids_first_missing.loc[:6, "id"] = None
    jsonl = rows("binary")
    for name, df in [("ids.csv", ids_first_missing), ("keys.jsonl", jsonl)]:
        write(df, tmp_path / name)
    lines = (tmp_path / "keys.jsonl").read_text().splitlines()
    lines[7:14] = ['{"id": "k%d", "text": "no label key %d"}' % (i, i) for i in range(7)]  # a chunk without "label"
    (tmp_path / "keys.jsonl").write_text("\n".join(lines) + "\n")
    for name in ("ids.csv", "keys.jsonl"):
        cfg = DataParams(source="file", path=str(tmp_path / name), id_column="id", on_bad_rows="drop")
        whole, _, r1, _ = prepared(monkeypatch, cfg, 10**6)
        small, _, r7, _ = prepared(monkeypatch, cfg, 7)
        pd.testing.assert_frame_equal(whole, small)
        assert r1 == r7
    assert r7["dropped"]["missing_label"] == 8  # the chunk without the key, and row 52
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty.jsonl: missing column 'text'"):
        prepare_dataset(DataParams(source="file", path=str(tmp_path / "empty.jsonl")), 0)
    reviews = DataParams(on_bad_rows="drop", max_rows=500)  # rotten_tomatoes: its first 1,000 lines are plot rows
    pd.testing.assert_frame_equal(prepared(monkeypatch, reviews, 10**6)[0], prepared(monkeypatch, reviews, 1000)[0])


def test_regression_copies_whose_targets_differ_in_sign_of_zero_conflict(tmp_path):
    df = pd.DataFrame({"id": [f"r{i}" for i in range(40)], "text": [f"t {i}" for i in range(40)],
                       "label": [str(float(i)) for i in range(40)]})
    df.loc[[1, 2], ["text", "label"]] = [["same", "0.0"], ["same", "-0.0"]]
    out, _, report = prepare_dataset(DataParams(source="file", path=write(df, tmp_path / "d.csv"), id_column="id",
                                                task="regression", duplicates="drop"), 0)
    assert report["duplicates"]["groups_with_conflicting_labels"] == 1 and not out["id"].isin(["r1", "r2"]).any()


def test_only_the_images_kept_are_hashed(tmp_path, monkeypatch):
    from PIL import Image

    from pipeline.data import images

    for i in range(40):
        Image.fromarray(np.full((8, 8, 3), i * 5, np.uint8)).save(tmp_path / f"{i}.png")
    pd.DataFrame({"file": [f"{i}.png" for i in range(40)], "label": ["x", "y"] * 20}).to_csv(tmp_path / "t.csv")
    hashed = []
    sha = images.file_sha
    monkeypatch.setattr(images, "file_sha", lambda paths: hashed.extend(paths) or sha(paths))
    df, _, _ = prepare_dataset(DataParams(source="file", path=str(tmp_path / "t.csv"), image_column="file",
                                          max_rows=12, min_class_rows=2), 0)
    assert len(df) == 12 and sorted(hashed) == sorted(df["image"])
