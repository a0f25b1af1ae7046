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


def test_texts_are_tokenized_a_few_thousand_at_a_time_into_flat_ids(tiny_backbone, monkeypatch):
    """tokenize calls the tokenizer on TOKENIZE_ROWS texts at a time (a whole shard's encodings at once took
    about 280 MB per 65,536 texts) and keeps the ids as one int32 array: the same ids, padded batches and
    subsets as one call on every text gives."""
    from pipeline.data import batching

    texts = ["short", "a much longer sentence with many more words in it", "mid length text", "x", "", "a b c"]
    whole = tiny_backbone.tokenizer(texts, truncation=True, max_length=8, padding=False)["input_ids"]
    sizes, call = [], type(tiny_backbone.tokenizer).__call__

    def spy(self, batch, **kw):
        sizes.append(len(batch))
        return call(self, batch, **kw)
    monkeypatch.setattr(type(tiny_backbone.tokenizer), "__call__", spy)
    monkeypatch.setattr(batching, "TOKENIZE_ROWS", 4)
    tok = tokenize(tiny_backbone.tokenizer, texts, 8)
    assert sizes == [4, 2] and tok.flat.dtype == np.int32 and len(tok) == 6
    assert [tok.row(i).tolist() for i in range(6)] == whole and tok.lengths.tolist() == [len(w) for w in whole]
    b = collate(tok, [1, 4, 0])
    width = max(len(whole[i]) for i in (1, 4, 0))
    expect = [whole[i] + [tok.pad_id] * (width - len(whole[i])) for i in (1, 4, 0)]
    assert b["input_ids"].dtype == torch.long and b["input_ids"].tolist() == expect
    assert b["attention_mask"].tolist() == [[int(j < len(whole[i])) for j in range(width)] for i in (1, 4, 0)]
    sub = tok.subset([5, 1])
    assert [sub.row(i).tolist() for i in range(2)] == [whole[5], whole[1]] and len(tok.subset([])) == 0
