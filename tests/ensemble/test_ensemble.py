"""The ensemble stage: its objective, the cross-fitted check against the best member, the fallback, and score
columns named by class. Real preds files in a temporary project folder, read through run_ensemble."""
import json

import numpy as np
import pandas as pd
import pytest

from pipeline.ensemble.blend import (counts_metric, crossfit_check, fit_weights, mcnemar_exact, objective_loss,
                                     row_counts, versus_best)
from pipeline.ensemble.evaluate import run_ensemble, run_evaluate
from pipeline.io import write_json
from pipeline.params import Params
from pipeline.preds import write_preds
from pipeline.data.tasks import Task

TASK = Task("multiclass", classes=["neg", "neu", "pos"])


def members(n=400, seed=0):
    """A: 85% right, soft (0.5 on its pick). B: 75% right, confident (0.9), wrong in other ways. Log loss
    likes B's confidence; the blend it picks loses accuracy to A alone."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)

    def member(acc, conf, shift):
        m = np.full((n, 3), (1 - conf) / 2)
        m[np.arange(n), np.where(rng.random(n) < acc, y, (y + shift) % 3)] = conf
        return m
    return y, member(0.85, 0.5, 1), member(0.75, 0.9, 2)


def project(tmp_path, monkeypatch, objective="log_loss", fallback=True) -> Params:
    monkeypatch.chdir(tmp_path)
    y, a, b = members()
    n = len(y)
    split = np.where(np.arange(n) < n // 2, "valid", "test")
    ids = [f"r{i}" for i in range(n)]
    data = tmp_path / "artifacts/data"
    data.mkdir(parents=True)
    pd.DataFrame({"id": ids, "text": "x", "label": np.asarray(TASK.classes)[y], "split": split}).to_parquet(
        data / "dataset.parquet")
    write_json(data / "task.json", TASK.to_dict())
    for name, s in (("a/src", a), ("b/src", b)):  # artifacts/heads/<head>/<features>: src-a, src-b
        (tmp_path / "artifacts/heads" / name).mkdir(parents=True)
        write_preds(tmp_path / "artifacts/heads" / name / "preds.parquet", ids, split, s, TASK.score_columns())
    return Params.model_validate({
        "data": {"task": "multiclass", "source": "file", "path": "x.csv"},
        "backbones": {"bb": {"name": "x"}}, "sources": {"src": {"backbone": "bb", "from": "pretrained"}},
        "heads": {"a": {"kind": "svm"}, "b": {"kind": "knn"}},
        "ensemble": {"members": ["src-a", "src-b"], "objective": objective, "fallback": fallback}})


def test_log_loss_blend_that_loses_accuracy_falls_back_to_the_best_member(tmp_path, monkeypatch):
    params = project(tmp_path, monkeypatch)
    out = tmp_path / "artifacts/ensemble"
    out.mkdir()
    run_ensemble(params, out)
    rep = json.loads((out / "weights.json").read_text())
    check = rep["check"]
    assert check["metric"] == "f1_macro" and check["best_member"] == "src-a" and check["gain"] < 0
    assert check["fallback"] and rep["weights"] == {"src-a": 1.0, "src-b": 0.0}
    preds = pd.read_parquet(out / "preds.parquet")
    a = pd.read_parquet(tmp_path / "artifacts/heads/a/src/preds.parquet")
    assert list(preds.columns) == ["id", "split", "score_neg", "score_neu", "score_pos"]
    assert np.array_equal(preds[TASK.score_columns()].to_numpy(), a[TASK.score_columns()].to_numpy())

    # evaluate reports the check beside the test metrics, with metric names of the task
    ev = tmp_path / "artifacts/evaluate"
    ev.mkdir()
    run_evaluate(params, ev)
    metrics = json.loads((ev / "metrics.json").read_text())
    assert set(metrics["ensemble"]) == {"f1_macro", "accuracy", "roc_auc_ovr", "log_loss"}
    assert metrics["ensemble_valid"]["fallback"] is True and metrics["ensemble_valid"]["best_member"] == "src-a"
    # the fallback ensemble is src-a, also the better member on test: no difference, no interval around it
    vs = metrics["ensemble_vs_best"]
    assert (vs["metric"], vs["member"], vs["delta"], vs["ci95_low"], vs["ci95_high"]) == ("f1_macro", "src-a", 0, 0, 0)
    assert vs["p_mcnemar"] is None  # f1_macro is not a per-row count
    assert (ev / "plots/detail.csv").read_text().startswith("class,precision,recall,f1,support")

    # without the fallback, the log-loss blend is kept (and is worse on valid, as the check said)
    params = params.model_copy(update={"ensemble": params.ensemble.model_copy(update={"fallback": False})})
    run_ensemble(params, out)
    rep = json.loads((out / "weights.json").read_text())
    assert 0 < rep["weights"]["src-b"] < 1 and rep["check"]["fallback"] is False


def test_members_are_aligned_by_id_and_a_missing_row_names_its_preds_file(tmp_path, monkeypatch):
    from pipeline import PipelineError

    params = project(tmp_path, monkeypatch)
    out = tmp_path / "artifacts/ensemble"
    out.mkdir()
    run_ensemble(params, out)
    first = (pd.read_parquet(out / "preds.parquet"), (out / "weights.json").read_text())
    f = tmp_path / "artifacts/heads/b/src/preds.parquet"
    b = pd.read_parquet(f)
    b.iloc[::-1].to_parquet(f)  # another row order: joined by id, the same blend
    run_ensemble(params, out)
    assert pd.read_parquet(out / "preds.parquet").equals(first[0]) and (out / "weights.json").read_text() == first[1]
    b.iloc[1:].to_parquet(f)  # r0, a valid row, missing
    with pytest.raises(PipelineError, match=r"heads/b/src/preds.parquet: no valid predictions for ids \['r0'\]"):
        run_ensemble(params, out)


@pytest.mark.parametrize("order", [0, 1])
def test_primary_objective_keeps_accuracy_and_breaks_ties_by_log_loss(order):
    y, a, b = members()
    pair = [a, b] if order == 0 else [b, a]  # the grid's first tie differs with the order
    loss = objective_loss(TASK, "primary", "accuracy")
    w, value = fit_weights(TASK, y, pair, 0.05, "mean", loss)
    best_alone = max(TASK.metric("accuracy", y, m) for m in pair)
    assert -value >= best_alone
    # among the weights with that accuracy, the one with the lowest log loss
    blend = [v * pair[0] + (1 - v) * pair[1] for v in np.linspace(0, 1, 21)]
    ties = [s for s in blend if TASK.metric("accuracy", y, s) == -value]
    assert len(ties) > 1
    assert TASK.selection_loss(y, w[0] * pair[0] + w[1] * pair[1]) == pytest.approx(
        min(TASK.selection_loss(y, s) for s in ties))
    check = crossfit_check(TASK, y, pair, ["a", "b"], 0.05, "mean", loss, "accuracy")
    assert check["gain"] >= 0 and check["folds"] == 5


def test_regression_check_is_signed_so_that_lower_rmse_wins():
    rng = np.random.default_rng(0)
    task = Task("regression", y_min=0, y_max=10)
    y = rng.uniform(0, 10, 300)
    good, noisy = (y + rng.normal(0, 0.5, 300))[:, None], (y + rng.normal(0, 3, 300))[:, None]
    check = crossfit_check(task, y, [good, noisy], ["good", "noisy"], 0.05, "mean",
                           objective_loss(task, "primary", "rmse"), "rmse")
    assert check["best_member"] == "good" and check["gain"] > -0.05  # a blend may add a little noise
    assert task.score_columns() == ["score"]
    assert Task("binary", classes=["rotten", "fresh"]).score_columns() == ["score_fresh"]


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel", "regression"])
def test_vectorized_blend_metrics_equal_the_task_metrics(kind):
    """The weight search scores thousands of blends at once; each number must be Task.metric's."""
    from pipeline.ensemble.blend import batch_metric

    rng = np.random.default_rng(3)
    n = 200
    task = {"binary": Task("binary", classes=["a", "b"]), "multiclass": TASK,
            "multilabel": Task("multilabel", classes=["x", "y", "z"]),
            "regression": Task("regression", y_min=0, y_max=1)}[kind]
    y = {"binary": rng.integers(0, 2, n), "multiclass": rng.integers(0, 3, n),
         "multilabel": rng.integers(0, 2, (n, 3)).astype(np.float32), "regression": rng.random(n)}[kind]
    B = rng.dirichlet(np.ones(3), (5, n)) if kind == "multiclass" else rng.random((5, n, task.n_outputs))
    for name in task.metric_names:
        assert batch_metric(task, name, y, B) == pytest.approx([task.metric(name, y, s) for s in B], abs=1e-12), name
    # the loss C searches and the weight search minimise is the task's own loss metric, blend by blend
    loss = {"binary": "log_loss", "multiclass": "log_loss", "multilabel": "log_loss_mean", "regression": "rmse"}[kind]
    assert task.selection_losses(y, B) == pytest.approx([task.metric(loss, y, s) for s in B], rel=1e-9)


@pytest.mark.parametrize("n, k, seed", [(10, 5, 0), (1918, 5, 42), (7, 3, 1), (101, 4, 7)])
def test_kfold_equals_scikit_learns(n, k, seed):
    """The cross-fitted check's folds are scikit-learn's KFold(shuffle=True) ones, so the ensemble stage's
    result did not move when it stopped importing scikit-learn."""
    from sklearn.model_selection import KFold

    from pipeline.ensemble.blend import kfold

    ours = kfold(n, k, seed)
    theirs = list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(n)))
    assert len(ours) == len(theirs)
    for (a, b), (c, d) in zip(ours, theirs):
        assert np.array_equal(a, c) and np.array_equal(b, d)


BIN = Task("binary", classes=["rotten", "fresh"])


def right_on(y, rows):
    """Binary scores that are right (0.8 / 0.2) on `rows`, wrong elsewhere."""
    return np.where(rows == (y == 1), 0.8, 0.2)[:, None]


def test_versus_best_gives_no_difference_for_identical_predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    member = right_on(y, rng.random(300) < 0.8)
    vs = versus_best(BIN, "accuracy", y, member.copy(), {"worse": 1 - member, "same": member})
    assert vs["member"] == "same" and vs["delta"] == 0 and vs["ci95_low"] == vs["ci95_high"] == 0
    assert vs["p_mcnemar"] == 1.0 and vs["only_blend_right"] == vs["only_member_right"] == 0


def test_versus_best_interval_is_paired_and_excludes_zero_for_a_clearly_better_blend():
    """The blend is right wherever the best member is, and on 5% more of the 400 rows. Paired, the difference
    has a standard error of sqrt(0.05 * 0.95 / 400) = 1.1 points, so its interval (about 5 +- 2.1 points) excludes
    0; resampling the two independently would give sqrt((0.85*0.15 + 0.8*0.2) / 400) = 2.7 points and include 0."""
    n, rng = 400, np.random.default_rng(1)
    y = rng.integers(0, 2, n)
    member_right = np.arange(n) < 320                    # 80%
    blend_right = member_right | (np.arange(n) >= 380)   # + 20 rows = 85%
    vs = versus_best(BIN, "accuracy", y, right_on(y, blend_right),
                     {"best": right_on(y, member_right), "weak": right_on(y, np.arange(n) < 200)})
    assert vs["member"] == "best" and vs["delta"] == pytest.approx(0.05)
    assert 0 < vs["ci95_low"] < 0.05 < vs["ci95_high"]
    se = np.sqrt(0.05 * 0.95 / n)
    assert vs["ci95_high"] - vs["ci95_low"] == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert (vs["only_blend_right"], vs["only_member_right"]) == (20, 0)
    assert vs["p_mcnemar"] == pytest.approx(2 * 0.5 ** 20)  # exact two-sided binomial: 20 of 20 discordant rows
    # the same rows, the blend now the worse one: the interval flips sign
    worse = versus_best(BIN, "accuracy", y, right_on(y, member_right), {"best": right_on(y, blend_right)})
    assert worse["delta"] == pytest.approx(-0.05) and worse["ci95_high"] < 0


def test_versus_best_follows_the_sign_of_a_lower_is_better_metric():
    rng = np.random.default_rng(2)
    task = Task("regression", y_min=0, y_max=10)
    y = rng.uniform(0, 10, 300)
    good, noisy = (y + rng.normal(0, 1.0, 300))[:, None], (y + rng.normal(0, 3, 300))[:, None]
    blend = (y + rng.normal(0, 0.5, 300))[:, None]
    vs = versus_best(task, "rmse", y, blend, {"good": good, "noisy": noisy}, n_boot=500)
    assert vs["member"] == "good" and vs["delta"] < 0 and vs["ci95_high"] < 0 and vs["p_mcnemar"] is None


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel", "regression"])
def test_bootstrap_row_counts_give_the_task_metric_on_a_resample(kind):
    """versus_best resamples counting metrics through per-row sums: on any resample (rows repeated), each
    number must be Task.metric's on those rows."""
    rng = np.random.default_rng(4)
    n = 300
    task = {"binary": BIN, "multiclass": TASK, "multilabel": Task("multilabel", classes=["x", "y", "z"]),
            "regression": Task("regression", y_min=0, y_max=1)}[kind]
    y = {"binary": rng.integers(0, 2, n), "multiclass": rng.integers(0, 3, n),
         "multilabel": rng.integers(0, 2, (n, 3)).astype(np.float32), "regression": rng.random(n)}[kind]
    s = rng.dirichlet(np.ones(3), n) if kind == "multiclass" else rng.random((n, task.n_outputs))
    idx = rng.integers(0, n, (3, n))
    counted = 0
    for name in task.metric_names:
        rows = row_counts(task, name, y, s)
        if rows is None:
            assert "roc_auc" in name or "log_loss" in name or name == "r2"
            continue
        counted += 1
        assert counts_metric(name, rows[idx].sum(1), n) == pytest.approx(
            [task.metric(name, y[i], s[i]) for i in idx], abs=1e-12), name
    assert counted == 2


@pytest.mark.parametrize("b, c", [(0, 0), (1, 0), (10, 10), (7, 19), (60, 41), (0, 400)])
def test_exact_mcnemar_is_scipys_two_sided_binomial_test(b, c):
    from scipy.stats import binomtest

    want = 1.0 if b + c == 0 else binomtest(b, b + c).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(want, rel=1e-9)


def test_the_evaluate_stage_replaces_the_ensemble_only_when_its_evaluation_succeeds(tmp_path, monkeypatch):
    """One stage fits the ensemble and scores every model (stages/evaluate.py). When scoring fails (here a
    model outside the ensemble lacks test predictions), the previous artifacts/ensemble stays as it was: no
    new weights that no evaluation vouches for, and no temporary folder left behind."""
    from pipeline.io import atomic_dir
    from pipeline import PipelineError, paths
    from stages.evaluate import run

    params = project(tmp_path, monkeypatch)
    params = params.model_copy(update={"ensemble": params.ensemble.model_copy(update={"members": ["src-a"]})})
    with atomic_dir(paths.EVALUATE) as out:  # as artifact_stage runs it
        run(params, None, out)
    before = {p.name: p.read_bytes() for p in paths.ENSEMBLE.iterdir()}
    assert json.loads((paths.EVALUATE / "metrics.json").read_text()).keys() >= {"src-a", "src-b", "ensemble"}

    b = tmp_path / "artifacts/heads/b/src/preds.parquet"
    pd.read_parquet(b).query("split != 'test'").to_parquet(b)
    params = params.model_copy(update={"ensemble": params.ensemble.model_copy(update={"grid_step": 0.1})})
    with pytest.raises(PipelineError, match="no test predictions"):
        with atomic_dir(paths.EVALUATE) as out:
            run(params, None, out)
    assert {p.name: p.read_bytes() for p in paths.ENSEMBLE.iterdir()} == before
    assert not [p for p in (tmp_path / "artifacts").rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
