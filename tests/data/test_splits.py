"""Data we never tuned for: planted duplicates (some with conflicting labels), a 3-class task, a regression
target with missing and infinite values, integer labels with a blank cell, latin-1 files, bad multilabel
separators. Each test fails on the code before the grouped split / string reading / encoding checks."""
import numpy as np
import pandas as pd
import pytest

from pipeline.data.load import DataError, as_text
from pipeline.data.prepare import prepare_dataset
from pipeline.params import DataParams
from pipeline.data.splits import normalize_text

WORDS = "great awful plot acting boring superb dull moving funny slow tense warm cold bright".split()


def corpus(n=300, seed=0):
    """n unique 3-class texts, then planted copies: 40 exact or near-exact (case, spacing) copies with the
    same label, 10 copies whose label disagrees with the original."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, 6)) + f" #{i}" for i in range(n)]
    labels = [("neg", "neu", "pos")[i % 3] for i in range(n)]
    rows = list(zip(texts, labels))
    for j, i in enumerate(rng.choice(n, 50, replace=False)):
        text, label = rows[i]
        variant = text.upper() if j % 3 == 0 else "  " + text.replace(" ", "   ") + " " if j % 3 == 1 else text
        if j >= 40:  # conflicting label
            label = {"neg": "pos", "neu": "neg", "pos": "neu"}[label]
        rows.append((variant, label))
    order = rng.permutation(len(rows))
    return pd.DataFrame({"id": [f"r{k}" for k in range(len(rows))],
                         "text": [rows[k][0] for k in order], "label": [rows[k][1] for k in order]})


def write(tmp_path, df, name="d.csv", **kw):
    path = tmp_path / name
    df.to_csv(path, index=False, **kw)
    return str(path)


def test_duplicate_groups_never_cross_splits_and_are_counted(tmp_path):
    path = write(tmp_path, corpus())
    cfg = DataParams(source="file", path=path, id_column="id", task="multiclass")
    df, task, report = prepare_dataset(cfg, seed=0)
    dup = report["duplicates"]
    assert dup == {"policy": "group", "rows_with_copies": 100, "groups_with_copies": 50, "extra_copies": 50,
                   "groups_with_conflicting_labels": 10, "rows_with_conflicting_labels": 20, "dropped": 0}
    assert len(df) == 350 and task.classes == ["neg", "neu", "pos"]
    splits_per_group = df.groupby(df["text"].map(normalize_text))["split"].nunique()
    assert splits_per_group.max() == 1  # no copy in train while another is in valid or test
    # the fractions still hold (they are fractions of groups)
    assert abs((df["split"] == "test").mean() - 0.15) < 0.03

    # keep: the old behaviour, copies may land in different splits (the leak this policy exists to show)
    kept, _, rep = prepare_dataset(cfg.model_copy(update={"duplicates": "keep"}), seed=0)
    assert rep["duplicates"]["rows_with_copies"] == 100
    assert kept.groupby(kept["text"].map(normalize_text))["split"].nunique().max() == 2

    # drop: one row per group, and none of the 10 groups whose labels disagree
    dropped, _, rep = prepare_dataset(cfg.model_copy(update={"duplicates": "drop"}), seed=0)
    assert rep["duplicates"]["dropped"] == 40 + 20 and len(dropped) == 350 - 60
    assert dropped["text"].map(normalize_text).is_unique


def test_regression_target_with_missing_and_infinite_values(tmp_path):
    rng = np.random.default_rng(1)
    df = corpus(120)
    df["label"] = rng.normal(50, 10, len(df)).round(2).astype(object)
    df.loc[[3, 9], "label"] = None
    df.loc[5, "label"] = "inf"
    df.loc[7, "label"] = "-inf"
    path = write(tmp_path, df)
    cfg = DataParams(source="file", path=path, task="regression")
    with pytest.raises(DataError, match=r"missing_label: 2 rows \(first: \[3, 9\]\).*non_finite_label: 2 rows "
                                        r"\(first: \[5, 7\]\)"):
        prepare_dataset(cfg, seed=0)
    out, task, report = prepare_dataset(cfg.model_copy(update={"on_bad_rows": "drop"}), seed=0)
    assert report["dropped"]["non_finite_label"] == 2 and np.isfinite(out["label"]).all()
    train = out.loc[out["split"] == "train", "label"]
    assert (task.y_min, task.y_max) == (train.min(), train.max())  # the scaling never sees test targets
    assert out.groupby(out["text"].map(normalize_text))["split"].nunique().max() == 1


def test_integer_labels_with_a_blank_stay_integers(tmp_path):
    df = corpus(90)
    df["label"] = [str(i % 2) for i in range(len(df))]
    df.loc[4, "label"] = None  # pandas would read the column as floats: "0.0" / "1.0"
    path = write(tmp_path, df)
    out, task, report = prepare_dataset(DataParams(source="file", path=path, on_bad_rows="drop", id_column="id",
                                                   classes=["0", "1"]), seed=0)
    assert report["dropped"]["missing_label"] == 1 and set(out["label"]) == {"0", "1"} and len(out) == 139
    assert out["id"].str.fullmatch(r"r\d+").all()
    # Parquet/JSON: an integer column with a missing value arrives as floats
    assert as_text(pd.Series([1.0, np.nan, 0.0, 2.5])).tolist()[:1] == ["1"]
    assert as_text(pd.Series([1.0, np.nan, 0.0, 2.5])).isna().tolist() == [False, True, False, False]
    df.to_parquet(tmp_path / "d.parquet")
    out, _, _ = prepare_dataset(DataParams(source="file", path=str(tmp_path / "d.parquet"), on_bad_rows="drop",
                                           classes=["0", "1"]), seed=0)
    assert set(out["label"]) == {"0", "1"}


def test_encoding_error_names_the_line_and_the_key(tmp_path):
    df = corpus(60)
    df.loc[12, "text"] = "un film très réussi"
    path = write(tmp_path, df, encoding="latin-1")
    with pytest.raises(DataError, match=r"d.csv: line 14 is not valid utf-8 \(byte 0xe8\); set data.encoding"):
        prepare_dataset(DataParams(source="file", path=path, task="multiclass"), seed=0)
    out, _, _ = prepare_dataset(DataParams(source="file", path=path, task="multiclass", encoding="latin-1"), 0)
    assert "un film très réussi" in set(out["text"])
    df.to_csv(tmp_path / "d.csv.bz2", index=False, encoding="latin-1")  # counted in the decompressed bytes
    with pytest.raises(DataError, match=r"d.csv.bz2: line 14 is not valid utf-8"):
        prepare_dataset(DataParams(source="file", path=str(tmp_path / "d.csv.bz2"), task="multiclass"), seed=0)
    with pytest.raises(ValueError, match="unknown encoding 'latin-9000'"):
        DataParams(encoding="latin-9000")


def test_multilabel_empty_separator_part_is_a_bad_row(tmp_path):
    df = corpus(60)
    df["label"] = ["a|b" if i % 2 else "b" for i in range(len(df))]
    df.loc[[2, 6], "label"] = ["a||b", "b|"]
    df.loc[8, "label"] = " a | b "  # spaces around parts are the same label set
    path = write(tmp_path, df)
    cfg = DataParams(source="file", path=path, task="multilabel")
    with pytest.raises(DataError, match=r"empty_label_part: 2 rows \(first: \[2, 6\]\)"):
        prepare_dataset(cfg, seed=0)
    out, task, _ = prepare_dataset(cfg.model_copy(update={"on_bad_rows": "drop"}), seed=0)
    assert task.classes == ["a", "b"] and set(out["label"]) == {"a|b", "b"}
