"""The benchmark entry points stay runnable: the GPU suite's CPU dry run, and the GPU extra matching torch."""
import json
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


def test_gpu_extra_matches_the_cuda_major_of_torch():
    """cuML wheels are per CUDA major; a cu12 cuML beside a CUDA 13 torch does not load."""
    extra = re.search(r'^gpu = \["cuml-cu(\d+)"\]', (ROOT / "pyproject.toml").read_text(), re.M)
    assert extra and torch.version.cuda and extra[1] == torch.version.cuda.split(".")[0]


@pytest.mark.slow
def test_gpu_suite_dry_run_on_cpu(tmp_path):
    """`make bench-gpu` runs benchmarks/gpu.py; its --device cpu --tiny mode exercises every bench path."""
    r = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                                      "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert {row["bench"] for row in res["rows"]} == {"embed", "finetune", "autofreeze", "heads"}
    assert res["meta"]["size"] == "tiny" and (tmp_path / "gpu.md").read_text().count("\n| ") >= 7
    r = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cuda", "--tiny"], cwd=ROOT,
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    if not torch.cuda.is_available():
        assert r.returncode != 0 and "torch sees no GPU" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script, args, rows", [
    ("finetune_speed.py", ["--rows", "300", "--steps", "3", "--warmup-steps", "1"],
     ["trainer_defaults", "trainer_tuned", "ours", "ours_fused", "ours_fast"]),
    ("embed_speed.py", ["--rows", "300", "--repeats", "2", "--runs", "naive", "hf", "st", "st_bf16", "ours_fp32",
                        "ours_bf16", "onnx_int8@32"],
     ["naive", "hf", "st", "st_bf16", "ours_fp32", "ours_bf16", "onnx_int8@32"]),
])
def test_speed_scripts_print_every_baseline_and_ours_on_a_few_rows(tmp_path, script, args, rows):
    """The RESULTS.md tables come from these scripts: each row, with its ratio to every baseline, still runs."""
    if script == "embed_speed.py":
        pytest.importorskip("onnxruntime")  # the onnx_int8@32 row
    r = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                            "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    table = {line.split("|")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) <= set(table), r.stdout[-2000:]
    baselines = ("vs trainer_defaults", "vs trainer_tuned") if script == "finetune_speed.py" else \
        ("vs naive", "vs hf", "vs st")
    assert all(b in table["run"] for b in baselines), table["run"]


@pytest.mark.slow
def test_embed_batching_compares_torch_and_int8_across_batch_sizes(tmp_path):
    """RESULTS.md's batching table (why the int8 cache key holds the batch size) comes from this script."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    r = subprocess.run([sys.executable, "benchmarks/embed_batching.py", "--rows", "200", "--batch-sizes", "16", "5"],
                       cwd=ROOT, capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                            "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1]
            for line in r.stdout.splitlines() if line.startswith("| ")}
    assert {"torch bf16", "onnx int8", "openvino int8"} <= set(rows), r.stdout[-2000:]
    assert float(rows["onnx int8"][0]) < float(rows["torch bf16"][0])  # int8 moves with the batch, bf16 hardly


@pytest.mark.slow
def test_accuracy_levers_tiny_run(tmp_path):
    """benchmarks/accuracy.py on 150 train rows and 16 tokens: one row per lever and seed, the table, the cache."""
    cmd = [sys.executable, "benchmarks/accuracy.py", "--train-rows", "150", "--max-length-cap", "16",
           "--only", "default", "lpft", "heads+logistic", "ens-equal", "--seeds", "42", "1",
           "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "acc.json")]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "acc.json").read_text())["rows"]
    assert [(x["row"], x["seed"]) for x in rows] == [(n, s) for s in (42, 1)
                                                     for n in ("default", "lpft", "heads+logistic", "ens-equal")]
    assert all(0 <= x[k] <= 1 for x in rows for k in ("valid_acc", "test_acc", "mlp_valid"))
    assert all(abs(sum(x["weights"].values()) - 1) < 1e-9 for x in rows)
    assert {"pt-logistic", "both-logistic"} <= set(rows[2]["weights"])
    assert r.stdout.count("\n| ") == 5  # the header and 4 rows
    # a fine-tune per (seed, lpft) and a pretrained pass: the head and ensemble rows reuse them
    assert len(list((tmp_path / "cache").glob("ft-*.npz"))) == 4 and len(list((tmp_path / "cache").glob("pt-*.npz"))) == 1
