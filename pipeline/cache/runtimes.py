"""CPU inference runtimes for the frozen text encoder: `embed.backend: onnx | openvino` (`torch` is the default).

The embed stage exports the encoder it has just loaded (pretrained or fine-tuned, adapters merged) to ONNX
once, into its own artifact (`encoder.onnx`; `encoder.int8.onnx` with `quantize: int8`), and embeds through
ONNX Runtime or OpenVINO; predict later loads the same file, so new texts are embedded exactly as the cache
was. Tokenization, length bucketing and dynamic padding are the torch path's (`pipeline.data.batching`); only the
forward pass changes. The output is the pooled embedding (B, hidden), float32.

- onnx: ONNX Runtime, CPU execution provider. int8: dynamic quantization of the MatMul weights
  (`onnxruntime.quantization.quantize_dynamic`, per channel), activations quantized on the fly (VNNI/AMX).
- openvino: OpenVINO's CPU plugin reads the ONNX file; on CPUs with AMX/AVX512-BF16 it runs in bf16 by
  default (its `INFERENCE_PRECISION_HINT`). int8: weight-only int8 compression with NNCF.
Both are optional: `pip install -e ".[onnx]"` / `".[openvino]"`; a clear error names the missing package.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from pipeline import PipelineError

log = logging.getLogger(__name__)
PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}


def exported_file(folder: Path, backend: str, quantize: str) -> Path:
    """What `export` leaves in `folder` for this backend and quantization (and the runtime then reads)."""
    if quantize != "int8":
        return Path(folder) / "encoder.onnx"
    return Path(folder) / ("encoder.int8.onnx" if backend == "onnx" else "encoder.int8.xml")


def _require(module: str, extra: str):
    import importlib

    if module in ("openvino", "nncf"):
        # OpenVINO bundles an older libtbb. Loaded first, it stays in the process, and scikit-learn-intelex
        # (the heads' CPU backend) then fails to import with an undefined TBB symbol. sklearnex first loads the
        # newer libtbb, which OpenVINO also runs with.
        try:
            importlib.import_module("sklearnex")
        except ImportError:
            pass  # not installed: no order to keep
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PipelineError(f"embed.backend needs {module}: pip install -e \".[{extra}]\"") from None


def export(encoder, folder: Path, backend: str, quantize: str = "none") -> Path:
    """Export a TextEncoder (torch, eval mode) to `folder`/encoder.onnx (+ the int8 file). -> the file to run."""
    import torch

    if not hasattr(encoder, "tokenizer"):
        raise PipelineError(f"embed.backend {backend!r}: text backbones only (image encoders embed with torch)")
    _require(PACKAGES[backend], backend)
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "encoder.onnx"
    dummy = encoder.tokenizer(["an example", "a second, longer example text"], padding=True, return_tensors="pt")
    encoder = encoder.float().cpu().eval()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, shape-trace chatter
        # The TorchScript exporter: one graph with dynamic batch and length (the dynamo exporter specializes
        # SDPA's mask shapes on this BERT code path).
        torch.onnx.export(encoder, (dummy["input_ids"], dummy["attention_mask"]), str(fp32),
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)
    if quantize != "int8":
        return fp32
    out = exported_file(folder, backend, "int8")
    if backend == "onnx":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)
    else:
        nncf, ov = _require("nncf", "openvino"), _require("openvino", "openvino")
        ov.save_model(nncf.compress_weights(ov.Core().read_model(str(fp32))), str(out))
    fp32.unlink()  # only what runs is kept (and cached by DVC)
    return out


class RuntimeEncoder:
    """Runs an exported encoder file. `prepare(texts)` tokenizes like the torch encoder; calling it with
    (input_ids, attention_mask) tensors gives the pooled embeddings as a float32 torch tensor (B, hidden)."""

    def __init__(self, path: Path, backend: str, tokenizer, max_length: int, threads: int | None = None):
        self.path, self.backend, self.tokenizer, self.max_length = Path(path), backend, tokenizer, max_length
        if not self.path.exists():
            raise PipelineError(f"{self.path}: exported encoder not found (run `dvc repro`)")
        if backend == "onnx":
            ort = _require("onnxruntime", "onnx")
            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            self._run = lambda ids, mask: self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        else:
            ov = _require("openvino", "openvino")
            config = {"PERFORMANCE_HINT": "LATENCY"} | ({"INFERENCE_NUM_THREADS": threads} if threads else {})
            compiled = ov.Core().compile_model(str(self.path), "CPU", config)
            request = compiled.create_infer_request()
            self._run = lambda ids, mask: request.infer({"input_ids": ids, "attention_mask": mask})[0].copy()

    def prepare(self, texts):
        from pipeline.data.batching import tokenize
        return tokenize(self.tokenizer, texts, self.max_length)

    # the torch path's interface (pipeline.cache.embed.embed_frame): to(), eval(), __call__
    def to(self, device):
        if getattr(device, "type", str(device)) != "cpu":
            raise PipelineError(f"embed.backend {self.backend!r} runs on the CPU; use backend: torch on a GPU")
        return self

    def eval(self):
        return self

    def __call__(self, input_ids, attention_mask):
        import torch

        out = self._run(input_ids.numpy().astype(np.int64), attention_mask.numpy().astype(np.int64))
        return torch.from_numpy(np.asarray(out, dtype=np.float32))
