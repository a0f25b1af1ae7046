import numpy as np
import torch

from pipeline.data.batching import collate, map_batches, sorted_batches, tokenize, train_batches


def test_bucketing_covers_each_row_once_and_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    for bucket in (True, False):
        batches = train_batches(lengths, 32, np.random.default_rng(1), bucket)
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    pad = lambda bs: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in bs)
    assert pad(train_batches(lengths, 32, np.random.default_rng(1), True)) < \
        0.2 * pad(train_batches(lengths, 32, np.random.default_rng(1), False))
    assert [len(b) for b in sorted_batches(lengths, 300)] == [300, 300, 300, 100]


def test_dynamic_padding(tiny_backbone):
    tok = tokenize(tiny_backbone.tokenizer, ["a b", "a b c d e f"], 32)
    b = collate(tok, [0])
    assert b["input_ids"].shape == (1, 4) and b["attention_mask"].sum() == 4  # [CLS] a b [SEP]
    assert collate(tok, [0, 1], pad_to=16)["input_ids"].shape == (2, 16)


def test_map_batches_keeps_input_order_and_padding_does_not_change_embeddings(tiny_backbone):
    texts = ["short", "a much longer sentence with many more words in it", "mid length text", "x"]
    tok = tokenize(tiny_backbone.tokenizer, texts, 32)
    tiny_backbone.eval()
    bucketed = map_batches(tiny_backbone, tok, 2, torch.device("cpu"), bucket=True)
    fixed = map_batches(tiny_backbone, tok, 3, torch.device("cpu"), bucket=False, pad_to=32)
    one_by_one = np.vstack([map_batches(tiny_backbone, tokenize(tiny_backbone.tokenizer, [t], 32), 1,
                                        torch.device("cpu")) for t in texts])
    assert np.allclose(bucketed, one_by_one, atol=1e-5) and np.allclose(fixed, one_by_one, atol=1e-5)
