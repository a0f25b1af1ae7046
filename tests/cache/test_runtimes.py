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
