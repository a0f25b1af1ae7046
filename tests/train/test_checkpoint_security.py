"""Loading what a stage wrote never runs code: a fine-tuning checkpoint whose pickle carries a payload is
refused, and nothing of the payload runs (behaviour, not a grep of the source). Heads: tests/heads/test_head_store.py."""
import os

import pytest
import torch

from pipeline.train.loop import Checkpointer


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_with_a_code_running_pickle_is_refused(tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "ckpt"
    (folder / "step-3").mkdir(parents=True)
    torch.save({"step": 3, "opt": Payload(marker)}, folder / "step-3" / "state.pt")
    (folder / "step-3" / "model.safetensors").write_bytes(b"")
    (folder / "latest").write_text("step-3")
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        Checkpointer(folder, every=1).maybe_load(model, opt, sched)
    assert not marker.exists()
