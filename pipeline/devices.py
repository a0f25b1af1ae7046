"""Device, precision and seeding: one place that decides bf16/fp16/fp32, TF32 and autocast."""
from __future__ import annotations

import contextlib
import functools
import logging
import random
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# x86 flags of CPUs with bf16 arithmetic units. Without them, torch runs bf16 autocast through conversions:
# on a 2-core AVX2 EPYC, 23x slower to fine-tune and 6.7x slower to embed than fp32 (benchmarks/RESULTS.md).
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}


@functools.lru_cache(maxsize=1)
def _host_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bf16 units (AVX512-BF16 or AMX), read from /proc/cpuinfo's flags (`cpuinfo`: its
    text, for tests). False where that file is absent (macOS, Windows): fp32 is the safe choice there."""
    cpuinfo = _host_cpuinfo() if cpuinfo is None else cpuinfo
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return bool(BF16_CPU_FLAGS & set(flags))


_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that support it, fp16 (+ grad scaler) on older GPUs; on a CPU, bf16 where it has bf16
    units (AVX512-BF16/AMX: 1.33x to train, 2.51x to embed on a Xeon), else fp32."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        _warn_once("precision bf16 on a CPU without bf16 units (no avx512_bf16/amx_bf16 flag): expect it several "
                   "times slower than fp32 here; set finetune.precision and embed.precision to auto or fp32")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    """A context running the forward at `precision` (auto resolved here too, never taken for fp16)."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_tf32(enabled: bool) -> None:
    # TF32 matmuls: ~free speed on Ampere+ for fine-tuning, no effect on CPU.
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
