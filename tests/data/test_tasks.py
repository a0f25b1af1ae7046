import numpy as np
import pytest
import torch

from pipeline.data.tasks import Task


def test_binary_bce_and_scores():
    t = Task("binary", classes=["rotten", "fresh"])
    y = t.encode(["fresh", "rotten", "rotten"])
    assert y.tolist() == [1, 0, 0] and t.n_outputs == 1
    logits = torch.tensor([[2.0], [-2.0], [0.0]])
    loss = t.loss(logits, t.torch_target(y))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[1.], [0.], [0.]]))
    assert torch.isclose(loss, expected)
    s = t.scores_from_logits(logits)
    assert s.shape == (3, 1) and t.metrics(y, s)["accuracy"] == pytest.approx(2 / 3)  # p = 0.5 counts as class 1


def test_multiclass_uses_cross_entropy():
    t = Task("multiclass", classes=["a", "b", "c"])
    y = t.encode(["c", "a"])
    logits = torch.tensor([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    assert torch.isclose(t.loss(logits, t.torch_target(y)), torch.nn.functional.cross_entropy(logits, torch.tensor([2, 0])))
    assert np.allclose(t.scores_from_logits(logits).sum(1), 1)


def test_multilabel_targets():
    t = Task("multilabel", classes=["x", "y", "z"], label_sep="|")
    assert t.encode(["x|z", "y"]).tolist() == [[1, 0, 1], [0, 1, 0]]


def test_regression_scaled_to_unit_and_back():
    t = Task("regression", y_min=1.0, y_max=100.0)
    y = np.array([1.0, 50.5, 100.0])
    assert t.torch_target(y).squeeze(-1).tolist() == pytest.approx([0.0, 0.5, 1.0])
    # logits that give sigmoid = the unit targets map back to the original values
    u = torch.tensor([[1e-6], [0.5], [1 - 1e-6]])
    assert t.scores_from_logits(torch.logit(u))[:, 0] == pytest.approx(y, abs=1e-3)
    m = t.metrics(y, np.array([[1.0], [60.5], [100.0]]))
    assert m["rmse"] == pytest.approx(np.sqrt(100 / 3)) and m["mae"] == pytest.approx(10 / 3)
