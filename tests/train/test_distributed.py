"""Scaling: auto micro-batch search, 8-bit AdamW availability, and real DDP (torchrun, gloo, 2 CPU ranks)."""
import importlib.util
import os
import subprocess
import sys

import pytest
import yaml

from pipeline import PipelineError
from pipeline.train.optim import make_optimizer
from pipeline.params import FinetuneParams
from pipeline.train.distributed import largest_fitting, shard
from tests.conftest import ROOT, shrink_params


def test_largest_fitting_keeps_the_effective_batch():
    assert largest_fitting(64, lambda b: b <= 12) == (8, 8)
    assert largest_fitting(32, lambda b: True) == (32, 1)
    with pytest.raises(PipelineError, match="not even a batch of 1"):
        largest_fitting(8, lambda b: False)


def test_shard_gives_equal_disjoint_shares():
    batches = list(range(11))
    parts = [shard(batches, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3] and sorted(sum(parts, [])) == list(range(9))


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_adamw8bit_without_bitsandbytes_is_a_clear_error():
    import torch
    with pytest.raises(PipelineError, match="adamw8bit' needs `pip install bitsandbytes`"):
        make_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))]}], FinetuneParams(optimizer="adamw8bit"),
                       torch.device("cpu"))


@pytest.mark.slow
def test_finetune_stage_under_torchrun_ddp(tmp_path, tiny_model_dir):
    p = shrink_params(tiny_model_dir)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=tmp_path, env=env, check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29533", "-m", "stages.finetune", "minilm"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank 0 of 2 on cpu (gloo)" in r.stderr and "rank 1 of 2 on cpu (gloo)" in r.stderr
    # 168 train rows / batch 16 = 11 batches -> 5 per rank per epoch
    assert "fine-tuning: 5 steps (5 per epoch), batch 16 x accum 1 x 2 rank(s)" in r.stderr
    out = tmp_path / "artifacts" / "finetune" / "minilm"
    assert (out / "model" / "model.safetensors").exists() and (out / "preds.parquet").exists()
    assert not list((tmp_path / "artifacts" / ".tmp").iterdir())
