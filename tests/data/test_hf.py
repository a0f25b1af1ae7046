"""data.source: hf -- real Hugging Face `datasets` objects written to disk, read back through prepare_dataset."""
import numpy as np
import pandas as pd
import pytest

datasets = pytest.importorskip("datasets")

from pipeline import PipelineError  # noqa: E402
from pipeline.data.prepare import prepare_dataset  # noqa: E402
from pipeline.params import DataParams  # noqa: E402

WORDS = ["good", "bad", "fine", "dull", "great", "awful", "nice", "poor"]


def texts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 6)) + f" {i}" for i in range(n)]


def cfg(path, **kw):
    return DataParams(source="hf", path=str(path), **{"valid_frac": 0.2, "test_frac": 0.2, **kw})


def test_a_saved_datasetdict_with_class_labels_reads_every_split(tmp_path):
    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["neg", "neu", "pos"])})
    parts = {s: datasets.Dataset.from_dict({"sentence": texts(n, i), "label": [k % 3 for k in range(n)]},
                                           features=feats) for i, (s, n) in enumerate([("train", 60), ("test", 30)])}
    datasets.DatasetDict(parts).save_to_disk(tmp_path / "ds")

    df, task, report = prepare_dataset(cfg(tmp_path / "ds", text_column="sentence", task="multiclass"), seed=0)
    assert len(df) == 90 and df["id"].is_unique
    assert sorted(df["label"].unique()) == ["neg", "neu", "pos"]  # names, not ClassLabel ids
    assert task.kind == "multiclass" and set(df["split"]) == {"train", "valid", "test"}
    assert set(df["text"]) == set(texts(60, 0)) | set(texts(30, 1))

    one, _, _ = prepare_dataset(cfg(tmp_path / "ds", text_column="sentence", task="multiclass", hf_split="train"), 0)
    assert len(one) == 60 and set(one["text"]) == set(texts(60, 0))
    with pytest.raises(PipelineError, match="no split 'dev'; splits are \\['train', 'test'\\]"):
        prepare_dataset(cfg(tmp_path / "ds", text_column="sentence", task="multiclass", hf_split="dev"), 0)


def test_files_through_a_builder_and_multilabel_sequences(tmp_path):
    n = 80
    frame = pd.DataFrame({"review": texts(n), "y": [float(i % 7) for i in range(n)], "key": [f"r{i}" for i in range(n)]})
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    df, task, _ = prepare_dataset(cfg(tmp_path / "reviews.csv", hf_builder="csv", text_column="review",
                                      label_column="y", id_column="key", task="regression"), seed=0)
    assert task.kind == "regression" and len(df) == n and set(df["id"]) == set(frame["key"])

    feats = datasets.Features({"text": datasets.Value("string"),
                               "tags": datasets.Sequence(datasets.ClassLabel(names=["a", "b", "c"]))})
    ds = datasets.Dataset.from_dict({"text": texts(n), "tags": [[i % 3] + ([2] if i % 2 else []) for i in range(n)]},
                                    features=feats)
    ds.save_to_disk(tmp_path / "ml")
    df, task, _ = prepare_dataset(cfg(tmp_path / "ml", label_column="tags", task="multilabel"), seed=0)
    assert task.kind == "multilabel" and task.classes == ["a", "b", "c"]
    assert df["label"].iloc[1] == "b|c"


def test_an_imagefolder_gives_image_paths_inside_the_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "pets" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "pets" / cls / f"{i}.png")
    df, task, _ = prepare_dataset(cfg(tmp_path / "pets", hf_builder="imagefolder", image_column="image"), seed=0)
    assert len(df) == 24 and task.classes == ["cat", "dog"]
    assert all(str(p).startswith(str(tmp_path / "pets")) and str(p).endswith(".png") for p in df["image"])
    assert df["image_sha"].is_unique


def test_missing_class_labels_are_bad_rows(tmp_path):
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    labels = [i % 2 for i in range(40)]
    labels[3], labels[7] = None, -1
    datasets.Dataset.from_dict({"text": texts(40), "label": labels}, features=feats).save_to_disk(tmp_path / "d")
    df, _, report = prepare_dataset(cfg(tmp_path / "d", on_bad_rows="drop"), seed=0)
    assert len(df) == 38 and report["dropped"]["missing_label"] == 2
    with pytest.raises(PipelineError, match="missing_label: 2 rows \\(first: \\[3, 7\\]\\)"):
        prepare_dataset(cfg(tmp_path / "d"), seed=0)


def test_images_embedded_by_save_to_disk_are_refused(tmp_path):
    from PIL import Image

    (tmp_path / "pets" / "cat").mkdir(parents=True)
    (tmp_path / "pets" / "dog").mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (4, 4), (i, 0, 0)).save(tmp_path / "pets" / ("cat", "dog")[i % 2] / f"{i}.png")
    datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "pets")).save_to_disk(tmp_path / "saved")
    with pytest.raises(PipelineError, match="column 'image' holds image bytes, not image files"):
        prepare_dataset(cfg(tmp_path / "saved", image_column="image"), seed=0)


def test_splits_that_disagree_ask_for_one_split(tmp_path):
    names = {"train": ["neg", "pos"], "other": ["neg", "neu", "pos"]}  # label names differ between splits
    datasets.DatasetDict({s: datasets.Dataset.from_dict(
        {"text": texts(20, i), "label": [k % 2 for k in range(20)]},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=n)}))
        for i, (s, n) in enumerate(names.items())}).save_to_disk(tmp_path / "d")
    with pytest.raises(PipelineError, match="pick one with data.hf_split"):
        prepare_dataset(cfg(tmp_path / "d"), seed=0)
    df, _, _ = prepare_dataset(cfg(tmp_path / "d", hf_split="train"), seed=0)
    assert len(df) == 20


def test_clear_errors_name_the_path(tmp_path):
    with pytest.raises(PipelineError, match="not a folder written by save_to_disk"):
        prepare_dataset(cfg(tmp_path / "missing"), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="empty: not a dataset saved with save_to_disk"):
        prepare_dataset(cfg(tmp_path / "empty"), seed=0)
    with pytest.raises(PipelineError, match="nope.csv: no such file"):
        prepare_dataset(cfg(tmp_path / "nope.csv", hf_builder="csv"), seed=0)
    datasets.Dataset.from_dict({"t": texts(10), "label": [0, 1] * 5}).save_to_disk(tmp_path / "d")
    with pytest.raises(PipelineError, match="missing column 'text'; columns are \\['t', 'label'\\]"):
        prepare_dataset(cfg(tmp_path / "d"), seed=0)
    with pytest.raises(ValueError, match="hf_builder and hf_split are for source: hf"):
        DataParams(source="file", path="x.csv", hf_builder="csv")
