"""CPU runtimes for the frozen encoder (embed.backend onnx / openvino): same embeddings as torch, and the import
order that keeps scikit-learn-intelex working beside OpenVINO."""
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("backend, quantize, min_cos", [("onnx", "none", 0.99999), ("onnx", "int8", 0.98),
                                                         ("openvino", "none", 0.999), ("openvino", "int8", 0.98)])
def test_runtime_backends_embed_like_torch(tmp_path, tiny_backbone, backend, quantize, min_cos):
    """embed.backend onnx/openvino: the exported encoder gives the torch path's embeddings (to the precision of
    the runtime: fp32 ONNX exact to float error, int8 and OpenVINO's bf16 close), on the same bucketed batches."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime" if backend == "onnx" else "openvino") is None:
        pytest.skip(f"{backend} is not installed")  # not imported here: runtimes._require orders the imports
    from pipeline.cache.embed import embed_frame
    from pipeline.params import EmbedParams
    from pipeline.cache.runtimes import RuntimeEncoder, export

    texts = [" ".join(["word"] * n) + f" number {n}" for n in range(1, 40)]
    cfg = EmbedParams(batch_size=8, precision="fp32")
    ref = embed_frame(tiny_backbone, texts, cfg, torch.device("cpu"))
    path = export(tiny_backbone, tmp_path, backend, quantize)
    assert path.exists() and path.name.startswith("encoder")
    got = embed_frame(RuntimeEncoder(path, backend, tiny_backbone.tokenizer, 32), texts, cfg, torch.device("cpu"))
    cos = np.sum(ref * got, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert got.shape == ref.shape and cos.min() >= min_cos


def test_openvino_then_the_sklearnex_heads_in_one_process(tmp_path):
    """predict with embed.backend openvino embeds first, then loads sklearnex heads: OpenVINO's older libtbb,
    loaded first, used to make sklearnex fail to import. A fresh interpreter, in that order."""
    import importlib.util
    import subprocess
    import sys

    code = ("from pipeline.cache.runtimes import _require; _require('openvino', 'openvino'); "
            "from pipeline.heads.estimators import resolve_backend, _estimators; print(_estimators(resolve_backend('sklearnex')))")
    if not (importlib.util.find_spec("openvino") and importlib.util.find_spec("sklearnex")):
        pytest.skip("needs openvino and scikit-learn-intelex")  # found, not imported: this process may hold either
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(Path(__file__).parents[2]))
    assert r.returncode == 0, r.stderr[-2000:]


def test_onnx_int8_vectors_depend_on_their_batch_so_its_cache_key_holds_the_batching(tmp_path, tiny_backbone,
                                                                                      tiny_params):
    """Dynamic int8 quantizes a batch's activations with that batch's range: the same rows batched otherwise
    get other vectors, by far more than float error. So under onnx + int8 the cache key holds batch_size,
    bucket and shard_rows (rows are batched within their shard): a changed batching re-embeds instead of
    reusing vectors a fresh run would not give. The torch path's vectors do not depend on the batching beyond
    float error, and its key leaves it out."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")
    from pipeline.cache.embed import cache_key, embed_frame
    from pipeline.cache.runtimes import RuntimeEncoder, export
    from pipeline.params import EmbedParams, Params

    cpu = torch.device("cpu")
    texts = [" ".join(["word", "other"][n % 2:] * n) + f" number {n}" for n in range(1, 40)]
    rt = RuntimeEncoder(export(tiny_backbone, tmp_path, "onnx", "int8"), "onnx", tiny_backbone.tokenizer, 32)
    by = {b: embed_frame(rt, texts, EmbedParams(batch_size=b, precision="fp32"), cpu) for b in (8, 3)}
    ref = {b: embed_frame(tiny_backbone, texts, EmbedParams(batch_size=b, precision="fp32"), cpu) for b in (8, 3)}
    assert np.abs(ref[8] - ref[3]).max() < 1e-4 < np.abs(by[8] - by[3]).max()

    def key(**embed):
        p = {**tiny_params, "embed": {**tiny_params["embed"], **embed}}
        return cache_key(Params.model_validate(p), "minilm_pt", tiny_backbone, cpu)["key"]
    assert key(backend="onnx", quantize="int8", batch_size=8) != key(backend="onnx", quantize="int8", batch_size=3)
    assert key(backend="onnx", quantize="int8") != key(backend="onnx", quantize="int8", bucket=False)
    assert key(backend="onnx", quantize="int8") != key(backend="onnx", quantize="int8", shard_rows=8192)
    assert key(batch_size=8) == key(batch_size=3) and key() == key(shard_rows=8192)
    assert key(backend="onnx", batch_size=8) == key(backend="onnx", batch_size=3)
