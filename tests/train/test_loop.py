"""The fine-tuning loop on a tiny random-init BERT: options, schemes, schedules, resume, determinism."""
import math

import numpy as np
import pytest
import torch

from pipeline import PipelineError
from pipeline.models.backbones import make_backbone
from pipeline.data.batching import collate, tokenize
from pipeline.models.classifier import Classifier, MLPHead
from pipeline.train.optim import make_optimizer, param_groups, schedule_fn
from pipeline.params import BackboneParams, FinetuneParams
from pipeline.data.tasks import Task
from pipeline.train.loop import finetune, predict_scores

CPU = torch.device("cpu")
TASK = Task("binary", classes=["neg", "pos"])
TEXTS = [f"this film is {'great fun' if i % 2 else 'dull and long'} {'really ' * (i % 5)}" for i in range(64)]
Y = np.array([i % 2 for i in range(64)])


def build(model_dir, seed=0):
    torch.manual_seed(seed)
    enc = make_backbone(BackboneParams(name=str(model_dir), max_length=32))
    return Classifier(enc, MLPHead(enc.hidden_size, 1, hidden=8, dropout=0.1))


def data(model):
    tok = tokenize(model.encoder.tokenizer, TEXTS, 32)
    return (tok, Y), (tok, Y)


def cfg(**kw):
    base = dict(epochs=1, batch_size=16, precision="fp32", eval_batch_size=64, warmup_frac=0.25)
    return FinetuneParams(**{**base, **kw})


def run(model_dir, c, seed=0, **kw):
    model = build(model_dir, seed)
    train, valid = data(model)
    hist = finetune(model, TASK, train, valid, c, seed=seed, device=CPU, **kw)
    return model, hist


OPTIONS = [dict(), dict(precision="bf16"), dict(precision="fp16"), dict(optimizer="sgd", lr=1e-2),
           dict(bucket=False), dict(grad_accum=2), dict(layer_decay=0.5), dict(grad_clip=0),
           *[dict(schedule=s) for s in ("cosine", "linear", "constant", "slanted_triangular", "one_cycle", "cyclic")],
           *[dict(scheme=s, unfreeze_every=1) for s in ("full", "freeze", "gradual", "lora", "adapter")]]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_each_option_trains_with_finite_loss(tiny_model_dir, opts):
    _, hist = run(tiny_model_dir, cfg(max_steps=2, **opts))
    assert hist[-1]["step"] == 2 and math.isfinite(hist[-1]["train_loss"])
    assert math.isfinite(hist[-1]["valid_log_loss"])


def test_compile_one_step(tiny_model_dir):
    pytest.importorskip("torch._inductor")
    import shutil
    if not shutil.which("gcc") and not shutil.which("cc"):
        pytest.skip("torch.compile on CPU needs a C compiler")
    _, hist = run(tiny_model_dir, cfg(max_steps=1, compile=True))
    assert math.isfinite(hist[-1]["train_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fused AdamW and autocast on CUDA need a GPU")
@pytest.mark.gpu
def test_cuda_bf16_fused(tiny_model_dir):
    model = build(tiny_model_dir)
    train, valid = data(model)
    hist = finetune(model, TASK, train, valid, cfg(max_steps=2, precision="auto"), 0, torch.device("cuda"))
    assert math.isfinite(hist[-1]["train_loss"])


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def changed(before, model):
    return {k for k, v in model.named_parameters() if not torch.equal(before[k], v.detach())}


def test_freeze_trains_only_the_head(tiny_model_dir):
    model = build(tiny_model_dir)
    before = snapshot(model)
    train, valid = data(model)
    finetune(model, TASK, train, valid, cfg(max_steps=2, scheme="freeze"), 0, CPU)
    assert changed(before, model) == {k for k in before if k.startswith("head.")}


def dropout_modes(model):
    """-> (dict filled during training: dropout module name -> set of `training` flags seen in forward, hooks)."""
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.setdefault(n, set()).add(mod.training))
             for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)]
    return seen, hooks


def test_freeze_runs_the_backbone_without_dropout(tiny_model_dir):
    model = build(tiny_model_dir)
    train, valid = data(model)
    seen, hooks = dropout_modes(model)
    finetune(model, TASK, train, valid, cfg(max_steps=2, scheme="freeze"), 0, CPU)
    [h.remove() for h in hooks]
    trained = {n for n, modes in seen.items() if True in modes}
    assert trained == {n for n in seen if n.startswith("head.")} and trained


def test_freeze_bottom_trains_only_the_top_blocks_and_head(tiny_model_dir):
    """freeze_bottom=1 on the 2-block model: the stem and block 0 get no update and run without dropout."""
    model = build(tiny_model_dir)
    before = snapshot(model)
    train, valid = data(model)
    seen, hooks = dropout_modes(model)
    finetune(model, TASK, train, valid, cfg(max_steps=3, freeze_bottom=1), 0, CPU)
    [h.remove() for h in hooks]
    moved = changed(before, model)
    assert {k for k in moved if not k.startswith("head.")} == {k for k in moved if ".layer.1." in k}
    assert any(".layer.1." in k for k in moved) and any(k.startswith("head.") for k in moved)
    with_dropout = {n for n, modes in seen.items() if True in modes}
    assert not any(".layer.0." in n or "embeddings" in n for n in with_dropout)
    assert any(".layer.1." in n for n in with_dropout)


def test_freeze_bottom_is_refused_when_nothing_would_train(tiny_model_dir):
    with pytest.raises(PipelineError, match="freeze_bottom 2: the backbone has 2 blocks"):
        run(tiny_model_dir, cfg(max_steps=1, freeze_bottom=2))
    with pytest.raises(ValueError, match="freeze_bottom is for scheme: full"):
        cfg(freeze_bottom=1, scheme="gradual")


def test_gradual_unfreezing_order(tiny_model_dir):
    """unfreeze_every=2, 2 blocks: steps 0-1 head only; 2-3 + top block; 4-5 + bottom block; 6+ embeddings."""
    model = build(tiny_model_dir)
    train, valid = data(model)
    seen = {}

    def on_step(step, loss, groups):
        seen[step] = {k for k, p in model.named_parameters() if p.requires_grad}
    finetune(model, TASK, train, valid, cfg(epochs=2, batch_size=8, scheme="gradual", unfreeze_every=2), 0, CPU,
             on_step=on_step)
    layer = lambda i: {k for k in seen[8] if f"encoder.layer.{i}." in k}
    head = {k for k in seen[8] if k.startswith("head.")}
    emb = {k for k in seen[8] if ".embeddings." in k}
    assert seen[1] == head
    assert seen[3] == head | layer(1)
    assert seen[5] == head | layer(1) | layer(0)
    assert seen[7] >= head | layer(1) | layer(0) | emb


def test_discriminative_learning_rates(tiny_model_dir):
    model = build(tiny_model_dir)
    groups = param_groups(model, cfg(lr=1e-3, head_lr=1e-2, layer_decay=0.5))
    by_layer = {g["layer"]: g["lr"] for g in groups}
    assert by_layer[-1] == 1e-2  # head
    assert by_layer[0] == pytest.approx(1e-3)  # top block
    assert by_layer[1] == pytest.approx(5e-4)  # bottom block
    assert by_layer[2] == pytest.approx(2.5e-4)  # embeddings
    n = sum(len(g["params"]) for g in groups)
    assert n == len(list(model.parameters()))


def test_adamw_is_fused_on_cpu(tiny_model_dir):
    """The CPU fine-tune takes the fused AdamW kernel (11% faster than foreach, benchmarks/RESULTS.md)."""
    model = build(tiny_model_dir)
    opt = make_optimizer(param_groups(model, cfg()), cfg(), torch.device("cpu"))
    assert opt.defaults["fused"] is True and not opt.defaults["foreach"]


@pytest.mark.parametrize("name, step, expected", [
    ("cosine", 0, 1 / 10), ("cosine", 9, 1.0), ("cosine", 10, 1.0), ("cosine", 55, 0.5),
    ("linear", 55, 0.5), ("constant", 80, 1.0),
    # ULMFiT STLR: cut = 10, ratio = 32: lr rises from 1/32 to 1 at the cut, then falls back
    ("slanted_triangular", 0, 1 / 32), ("slanted_triangular", 10, 1.0),
    ("slanted_triangular", 55, (1 + 0.5 * 31) / 32),
    ("one_cycle", 0, 1 / 25), ("one_cycle", 10, 1.0),
    ("cyclic", 0, 0.1), ("cyclic", 25, 1.0), ("cyclic", 50, 0.1), ("cyclic", 75, 1.0),
])
def test_schedule_values(name, step, expected):
    assert schedule_fn(name, total=100, warmup_frac=0.1)(step) == pytest.approx(expected)


def test_schedule_is_what_the_optimizer_sees(tiny_model_dir):
    lrs = {}
    c = cfg(epochs=2, batch_size=8, schedule="slanted_triangular", warmup_frac=0.25, lr=1e-3, head_lr=1e-3)
    run(tiny_model_dir, c, on_step=lambda s, l, g: lrs.setdefault(s, g[0]["lr"]))
    f = schedule_fn("slanted_triangular", 16, 0.25)
    assert [lrs[s] for s in (1, 4, 10)] == pytest.approx([1e-3 * f(s) for s in (1, 4, 10)])


def test_same_seed_same_predictions(tiny_model_dir):
    preds = []
    for _ in range(2):
        model, _ = run(tiny_model_dir, cfg(max_steps=3))
        preds.append(predict_scores(model, TASK, data(model)[1][0], 64, CPU))
    assert np.array_equal(preds[0], preds[1])


@pytest.mark.parametrize("scheme", [{}, dict(scheme="autofreeze", autofreeze_interval=0.125, autofreeze_percentile=100)],
                         ids=["full", "autofreeze"])
def test_resume_after_interruption_matches_uninterrupted(tiny_model_dir, tmp_path, scheme):
    # autofreeze: decisions every step freeze all but the top block at step 2, before the kill at step 5
    c = cfg(epochs=2, batch_size=8, checkpoint_every=3, **scheme)
    ref, _ = run(tiny_model_dir, c)

    class Killed(Exception):
        pass

    def die(step, *_):
        if step == 5:
            raise Killed  # after the checkpoint at step 3, mid-epoch, with dropout RNG in use
    with pytest.raises(Killed):
        run(tiny_model_dir, c, checkpoint_dir=tmp_path, on_step=die)
    assert (tmp_path / "step-3" / "model.safetensors").exists() and (tmp_path / "latest").read_text() == "step-3"
    resumed, hist = run(tiny_model_dir, c, seed=0, checkpoint_dir=tmp_path)
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("scheme, extra", [("lora", lambda k: False), ("adapter", lambda k: "LayerNorm" in k)])
def test_adapter_schemes_train_only_adapters_and_reload(tiny_model_dir, tmp_path, scheme, extra):
    from pipeline.models.schemes import is_adapter_param, load_finetuned_encoder, save_adapted

    model = build(tiny_model_dir)
    train, valid = data(model)
    c = cfg(max_steps=3, scheme=scheme, adapter_size=4, lr=1e-2)
    finetune(model, TASK, train, valid, c, 0, CPU)  # injects the adapters, then trains
    trained = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trained and all(k.startswith("head.") or is_adapter_param(k) or extra(k) for k in trained)
    assert any(is_adapter_param(k) for k in trained)
    # the frozen pretrained weights are untouched: compare with a fresh load
    fresh = build(tiny_model_dir)
    fresh_state = fresh.state_dict()
    for k, v in model.state_dict().items():
        base = k.replace(".base_layer.", ".").replace(".linear.", ".")
        if base in fresh_state and k not in trained:
            assert torch.equal(v, fresh_state[base]), k
    save_adapted(model.encoder, c, tmp_path)
    assert (tmp_path / "adapter.safetensors").stat().st_size < 0.5 * sum(
        v.numel() * 4 for v in fresh.encoder.state_dict().values())
    from pipeline.params import BackboneParams
    rebuilt = load_finetuned_encoder(BackboneParams(name=str(tiny_model_dir), max_length=32), tmp_path).eval()
    model.eval()
    b = collate(train[0], list(range(8)))
    with torch.no_grad():
        assert torch.allclose(rebuilt(**b), model.encoder(**b), atol=1e-6)
