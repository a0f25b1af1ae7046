"""Device, precision, seeding and the launcher's ranks: one place that decides bf16/fp16/fp32, TF32, autocast,
and which process group a torchrun/accelerate rank joins (fine-tuning's DDP and the sharded embed both use it)."""
from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pipeline import PipelineError

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


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) when not launched."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    return dist_env()[0] == 0


def init_distributed(device: torch.device, timeout_s: float | None = None) -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun/accelerate (NCCL on GPUs, gloo on CPU; multi-node
    through the launcher's MASTER_ADDR/MASTER_PORT). `timeout_s`: how long a collective may wait (None: torch's
    default, 10 min for NCCL, 30 for gloo). Returns (rank, world, this rank's device)."""
    rank, world, local = dist_env()
    if world == 1:
        return 0, 1, device
    if not 0 <= rank < world:
        raise PipelineError(f"RANK={rank} is outside WORLD_SIZE={world}: start the stage with torchrun or "
                            "accelerate launch, which set both")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing and not dist.is_initialized():
        raise PipelineError(f"WORLD_SIZE={world} but {' and '.join(missing)} unset: start the stage with torchrun "
                            "or accelerate launch, which set them")
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise PipelineError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s): "
                                "--nproc_per_node must not exceed them")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=None if timeout_s is None else datetime.timedelta(seconds=timeout_s))
    log.info("process group: rank %d of %d on %s (%s)", rank, world, device, dist.get_backend())
    return rank, world, device


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def gather(obj) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank; [obj] in a single process."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def finish_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
