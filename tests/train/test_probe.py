"""LP-FT's probe (pipeline/train/probe.py): it fits the head on frozen embeddings, leaves the encoder alone, and
the cached-embedding `mlp` head (heads/mlp.py) is the same fit."""
import numpy as np
import torch

from pipeline.heads.mlp import EmbeddingMLP
from pipeline.train.probe import fit_mlp_head, head_scores, probe_head
from tests.train.test_loop import CPU, TASK, build, data


def test_probe_fits_the_head_and_leaves_the_encoder(tiny_model_dir):
    model = build(tiny_model_dir)
    train, valid = data(model)
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    out = probe_head(model.head, model.encoder, TASK, train, valid, epochs=20, seed=0, device=CPU, precision="fp32")
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in enc_before.items())
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items())
    assert out["probe_seconds"] > 0 and 0 <= out["probe_valid_accuracy"] <= 1


def test_embedding_mlp_is_the_probe_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    a = EmbeddingMLP(TASK, hidden=8, epochs=5, seed=3).fit(X, y, X[:20], y[:20])
    b = fit_mlp_head(TASK, X, y, X[:20], y[:20], hidden=8, epochs=5, seed=3)
    assert np.array_equal(a.scores(X), head_scores(b, TASK, X))
