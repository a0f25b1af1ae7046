"""The features the speed headlines rest on are active through the real code paths, not just configurable:
autocast lowers the precision of the encoder's matmuls, bucketing removes padded tokens, and the AutoFreeze
cache stops the frozen prefix from running. Each test fails under a mutation in `tools/mutate.py`."""
import numpy as np
import pytest
import torch

from pipeline.cache.embed import embed_frame
from pipeline.params import EmbedParams
from pipeline.train.loop import finetune
from tests.train.test_loop import CPU, TASK, Y, build, cfg, data

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# one word per token, 1 to 30 words, in random order: unsorted batches carry a lot of padding
VARIED = [" ".join(["word"] * n) for n in np.random.default_rng(0).integers(1, 31, size=96)]


def record_query_dtypes(encoder) -> list[tuple[bool, torch.dtype]]:
    """(inference mode?, output dtype) of every call of the first block's query projection (a Linear)."""
    seen = []
    encoder.blocks()[0].attention.self.query.register_forward_hook(
        lambda m, i, out: seen.append((torch.is_inference_mode_enabled(), out.dtype)))
    return seen


def record_masks(encoder) -> tuple[list[tuple[bool, torch.Tensor]], object]:
    """(inference mode?, attention mask) of every encoder call, and the hook's handle."""
    seen = []
    handle = encoder.register_forward_pre_hook(
        lambda m, args: seen.append((torch.is_inference_mode_enabled(), args[1])))
    return seen, handle


def padded(masks) -> int:
    return sum(int(m.numel() - m.sum()) for m in masks)


@pytest.mark.parametrize("precision", DTYPES)
def test_finetune_and_its_evaluation_run_the_encoder_in_the_asked_precision(tiny_model_dir, precision):
    model = build(tiny_model_dir)
    seen = record_query_dtypes(model.encoder)
    train, valid = data(model)
    finetune(model, TASK, train, valid, cfg(max_steps=2, precision=precision), seed=0, device=CPU)
    steps = {dt for inference, dt in seen if not inference}
    evals = {dt for inference, dt in seen if inference}  # predict_scores on valid after the last step
    assert steps == {DTYPES[precision]} and evals == {DTYPES[precision]}, seen


@pytest.mark.parametrize("precision", DTYPES)
def test_embedding_runs_the_encoder_in_the_asked_precision(tiny_backbone, precision):
    seen = record_query_dtypes(tiny_backbone)
    X = embed_frame(tiny_backbone, VARIED[:20], EmbedParams(batch_size=8, precision=precision), CPU)
    assert X.dtype == np.float32 and X.shape == (20, tiny_backbone.hidden_size)
    assert {dt for _, dt in seen} == {DTYPES[precision]} and len(seen) == 3


def test_bucketed_training_batches_carry_far_fewer_padded_tokens(tiny_model_dir):
    pads = {}
    for bucket in (True, False):
        model = build(tiny_model_dir)
        tok = model.encoder.prepare(VARIED)
        y = np.arange(len(VARIED)) % 2
        masks, _ = record_masks(model.encoder)
        finetune(model, TASK, (tok, y), (tok, y), cfg(batch_size=8, bucket=bucket), seed=0, device=CPU)
        steps = [m for inference, m in masks if not inference]
        assert len(steps) == 12 and sum(int(m.sum()) for m in steps) == int(tok.lengths.sum())  # each row once
        pads[bucket] = padded(steps)
    assert pads[False] > 0 and pads[True] < 0.2 * pads[False], pads


def test_bucketed_embedding_batches_carry_far_fewer_padded_tokens(tiny_backbone):
    pads, out = {}, {}
    for bucket in (True, False):
        masks, hook = record_masks(tiny_backbone)
        out[bucket] = embed_frame(tiny_backbone, VARIED, EmbedParams(batch_size=8, precision="fp32",
                                                                     bucket=bucket), CPU)
        hook.remove()
        assert len(masks) == 12
        pads[bucket] = padded(m for _, m in masks)
    assert pads[False] > 0 and pads[True] < 0.2 * pads[False], pads
    assert np.allclose(out[True], out[False], atol=1e-5)  # same rows, same order, whatever the batching


def test_autofreeze_steps_skip_the_frozen_prefix_once_it_is_cached(tiny_model_dir):
    """After the prefix (embeddings + block 0 of 2) freezes, training steps start at block 1 from the cache:
    the frozen units are called only by inference passes (building the cache, evaluation), never by a step."""
    model = build(tiny_model_dir)
    enc = model.encoder
    first, top = enc.blocks()
    frozen = lambda: not any(p.requires_grad for p in (*enc.model.embeddings.parameters(), *first.parameters()))
    calls = {"prefix_before": 0, "prefix_after": 0, "top_after": 0}

    def count(unit):
        def hook(module, args):
            if torch.is_inference_mode_enabled():
                return
            when = "after" if frozen() else "before"
            key = f"{unit}_{when}"
            calls[key] = calls.get(key, 0) + 1
        return hook
    enc.model.embeddings.register_forward_pre_hook(count("prefix"))
    first.register_forward_pre_hook(count("prefix"))
    top.register_forward_pre_hook(count("top"))
    train, valid = data(model)
    c = cfg(scheme="autofreeze", autofreeze_interval=0.25, autofreeze_percentile=100, epochs=3,
            autofreeze_cache="memory")
    hist = finetune(model, TASK, train, valid, c, seed=0, device=CPU)
    assert hist[-1]["frozen_units"] == 2 and len(Y) == 64
    assert calls["prefix_before"] > 0 and calls["top_after"] >= 8, calls  # the hooks see the steps
    assert calls["prefix_after"] == 0, calls
