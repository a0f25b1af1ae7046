"""pipeline/devices.py: precision: auto picks bf16 on a CPU only where it has bf16 units (on an AVX2-only
CPU, bf16 autocast measured 23x slower to fine-tune and 6.7x slower to embed than fp32: benchmarks/RESULTS.md,
"precision on a CPU"); the launcher's environment: a bad one is a PipelineError that says how to start the
stage, never a hang."""
import logging

import pytest
import torch

from pipeline import PipelineError, devices
from pipeline.devices import dist_env, gather, init_distributed

# the first `flags` lines of /proc/cpuinfo on the two hosts measured (trimmed)
XEON_AMX = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480C\n"
            "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8\n\n"
            "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8\n")
EPYC_AVX2 = ("processor\t: 0\nmodel name\t: AMD EPYC\n"
             "flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni vaes vpclmulqdq\n")
AVX512_NO_BF16 = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni\n"


@pytest.mark.parametrize("text, expected", [(XEON_AMX, True), (EPYC_AVX2, False), (AVX512_NO_BF16, False),
                                            ("flags\t\t: avx512_bf16\n", True), ("", False)])
def test_cpu_has_bf16_reads_the_flags_line(text, expected):
    assert devices.cpu_has_bf16(text) is expected


@pytest.mark.parametrize("text, expected", [(XEON_AMX, "bf16"), (EPYC_AVX2, "fp32")])
def test_auto_on_a_cpu_is_bf16_only_with_bf16_units(monkeypatch, text, expected):
    monkeypatch.setattr(devices, "_host_cpuinfo", lambda: text)
    assert devices.resolve_precision("auto", torch.device("cpu")) == expected
    assert devices.resolve_precision("fp32", torch.device("cpu")) == "fp32"  # a forced choice is kept
    assert devices.resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_forced_bf16_on_a_cpu_without_bf16_units_warns(monkeypatch, caplog):
    monkeypatch.setattr(devices, "_host_cpuinfo", lambda: EPYC_AVX2)
    monkeypatch.setattr(devices, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="pipeline.devices"):
        devices.resolve_precision("bf16", torch.device("cpu"))
        devices.resolve_precision("bf16", torch.device("cpu"))
    assert caplog.text.count("without bf16 units") == 1  # once per process, not per batch
    caplog.clear()
    monkeypatch.setattr(devices, "_host_cpuinfo", lambda: XEON_AMX)
    with caplog.at_level(logging.WARNING, logger="pipeline.devices"):
        devices.resolve_precision("bf16", torch.device("cpu"))
    assert "without bf16 units" not in caplog.text


def test_autocast_resolves_auto_instead_of_taking_it_for_fp16(monkeypatch):
    monkeypatch.setattr(devices, "_host_cpuinfo", lambda: EPYC_AVX2)
    x = torch.ones(2, 2)
    with devices.autocast("auto", torch.device("cpu")):
        assert (x @ x).dtype == torch.float32
    monkeypatch.setattr(devices, "_host_cpuinfo", lambda: XEON_AMX)
    with devices.autocast("auto", torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16


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
