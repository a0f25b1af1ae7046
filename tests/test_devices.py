"""The launcher's environment: a bad one is a PipelineError that says how to start the stage, never a hang."""
import pytest
import torch

from pipeline import PipelineError
from pipeline.devices import dist_env, gather, init_distributed


def test_no_launcher_is_one_process(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert dist_env() == (0, 1, 0) and init_distributed(torch.device("cpu"))[:2] == (0, 1)
    assert gather({"rank": 0}) == [{"rank": 0}]


@pytest.mark.parametrize("env, message", [
    ({"RANK": "0", "WORLD_SIZE": "2"}, "WORLD_SIZE=2 but MASTER_ADDR and MASTER_PORT unset: start the stage with"),
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, "RANK=2 is outside"),
])
def test_a_half_set_launcher_environment_is_a_clear_error(monkeypatch, env, message):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(PipelineError, match=message):
        init_distributed(torch.device("cpu"))
