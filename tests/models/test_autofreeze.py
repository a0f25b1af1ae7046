"""AutoFreeze on the tiny BERT: cached prefix == computed prefix, frozen weights stop changing, the cache is
rebuilt when the prefix grows, and the paper's rule freezes a front prefix only."""
import numpy as np
import pytest
import torch

from pipeline.models.autofreeze import AutoFreeze
from pipeline.data.tasks import Task
from pipeline.train.loop import finetune
from tests.train.test_loop import CPU, TASK, Y, build, cfg, data


def scheme_for(model, **kw):
    (tok, _), _ = data(model)
    s = AutoFreeze(model, cfg(scheme="autofreeze", **kw), total=100)
    s.setup(tok, CPU, "fp32", steps_per_epoch=4)
    return s, tok


@pytest.mark.parametrize("where, atol", [("memory", 1e-5), ("zarr", 2e-2)])
def test_cached_prefix_gives_the_logits_of_the_computed_prefix(tiny_model_dir, where, atol):
    model = build(tiny_model_dir)
    s, tok = scheme_for(model, autofreeze_cache=where)
    idx = [3, 0, 17, 42, 8]
    batch = list(tok.batch(idx))
    s.freeze_to(2)  # embeddings + block 0 of 2
    model.eval()
    with torch.no_grad():
        computed = model(*batch)
        cached = s.forward(model, idx, batch)
    assert s.cache.where == where and s.blocks_frozen == 1
    assert torch.allclose(cached, computed, atol=atol), (cached - computed).abs().max()
    s.finish()


def test_cache_is_rebuilt_when_the_prefix_grows(tiny_model_dir):
    model = build(tiny_model_dir).eval()
    s, tok = scheme_for(model, autofreeze_cache="memory")
    batch = list(tok.batch([5]))
    s.freeze_to(1)
    first = s.cache
    with torch.no_grad():
        assert torch.equal(first.gather([5]), model.encoder.forward_prefix(batch, 0))
        s.freeze_to(2)
        assert s.cache is not first and first.rows == []  # the old one is released
        assert torch.allclose(s.cache.gather([5]), model.encoder.forward_prefix(batch, 1), atol=1e-6)


def test_frozen_weights_stop_changing_and_only_a_front_prefix_freezes(tiny_model_dir):
    model = build(tiny_model_dir)
    (tok, y), valid = data(model)
    snap = {}

    def on_step(step, loss, groups):
        if step == 2:  # decisions come before steps 1, 2, ...: the prefix frozen before step 3 is what we saw here
            snap.update({k: v.detach().clone() for k, v in model.encoder.named_parameters()})

    c = cfg(scheme="autofreeze", autofreeze_interval=0.25, autofreeze_percentile=100, max_steps=12, epochs=3)
    hist = finetune(model, TASK, (tok, y), valid, c, seed=0, device=CPU, on_step=on_step)
    assert hist[-1]["frozen_units"] == 2  # percentile 100 freezes everything it may: all but the top block
    after = dict(model.encoder.named_parameters())
    frozen = [k for k in snap if k.startswith(("model.embeddings", "model.encoder.layer.0."))]
    top = [k for k in snap if k.startswith("model.encoder.layer.1.")]
    assert frozen and all(torch.equal(snap[k], after[k]) for k in frozen)
    assert any(not torch.equal(snap[k], after[k]) for k in top)
    assert [k for k in frozen if after[k].requires_grad] == []


def test_rule_freezes_the_contiguous_front_below_the_percentile(tiny_model_dir):
    model = build(tiny_model_dir)
    s, _ = scheme_for(model, autofreeze_cache="none", autofreeze_percentile=50)
    s.prev = np.array([1.0, 1.0, 1.0])
    # changes: embeddings 0.0 (slow), block0 0.9 (still learning), block1 0.0: only the embeddings may freeze,
    # block1 is below the threshold but not part of a frozen front
    s.sums = [torch.ones(1), torch.full((1,), 1.9), torch.ones(1)]
    s.decide(step=4)
    assert s.frozen == 1 and s.history[-1]["frozen"] == ["embeddings"]


def test_autofreeze_trains_through_the_loop_with_its_cache(tiny_model_dir):
    model = build(tiny_model_dir)
    train, valid = data(model)
    c = cfg(scheme="autofreeze", autofreeze_interval=0.25, autofreeze_percentile=100, epochs=3)
    hist = finetune(model, Task("binary", classes=["neg", "pos"]), train, valid, c, seed=0, device=CPU)
    assert hist[-1]["frozen_units"] == 2 and np.isfinite(hist[-1]["train_loss"]) and len(Y) == 64


def test_vit_cached_prefix_gives_the_computed_logits(tmp_path):
    from pipeline.models.backbones import make_backbone
    from pipeline.models.classifier import Classifier, MLPHead
    from pipeline.params import BackboneParams, FinetuneParams
    from tests.models.test_vision import TINY_VIT, write_pngs

    table = write_pngs(tmp_path, n=12)
    torch.manual_seed(0)
    enc = make_backbone(BackboneParams(modality="image", name="vit_tiny_patch16_224", model_kwargs=TINY_VIT))
    model = Classifier(enc, MLPHead(enc.hidden_size, 1, hidden=8))
    inputs = enc.prepare([str(tmp_path / f) for f in table["file"]])
    s = AutoFreeze(model, FinetuneParams(scheme="autofreeze", autofreeze_cache="memory"), total=10)
    s.setup(inputs, CPU, "fp32", steps_per_epoch=2)
    assert {id(p) for p in s.units[0].parameters()} == {id(p) for p in (enc.model.cls_token, enc.model.pos_embed,
                                                                         *enc.model.patch_embed.parameters())}
    s.freeze_to(2)
    model.eval()
    idx = [1, 4, 7]
    with torch.no_grad():
        computed = model(*inputs.batch(idx))
        assert s.batch(inputs, idx) == ()  # images are not even decoded once cached
        cached = s.forward(model, idx, ())
    assert torch.allclose(cached, computed, atol=1e-5)


@pytest.mark.parametrize("name, stem", [("efficientnet_b0", {"conv_stem", "bn1"}), ("resnet18", {"conv1", "bn1"}),
                                        ("vit_tiny_patch16_224", {"cls_token", "patch_embed", "pos_embed"})])
def test_the_stem_is_what_runs_before_the_first_block(name, stem):
    """Unit 0 of AutoFreeze and finetune.freeze_bottom: never a layer after the last block (EfficientNet's
    conv_head and bn2 are not in the name list; they come after its blocks)."""
    import timm

    from pipeline.models.schemes import Stem

    m = timm.create_model(name, pretrained=False)
    blocks = list(m.blocks) if hasattr(m, "blocks") else [getattr(m, f"layer{i}") for i in range(1, 5)]
    ids = {id(p) for p in Stem(m, blocks).parameters()}
    assert {n.split(".")[0] for n, p in m.named_parameters() if id(p) in ids} == stem
