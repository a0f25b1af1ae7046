"""The prepare stage's allocator settings (pipeline/heap.py) are in force once stages.prepare is imported:
glibc keeps large blocks on their own mappings after a large free, and Arrow allocates from the system
pool. Each check runs in a fresh interpreter: both settings depend on what happened before them."""
import ctypes
import ctypes.util
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

GLIBC = hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallinfo2")

# After malloc(1 MiB) + free, glibc's dynamic rule raises the mmap threshold to 1 MiB, so a later
# 512 KiB block comes from the heap (hblkhd, the bytes in mmapped blocks, stays put) and its hole is
# kept after free. With the threshold fixed, the block is mmapped: hblkhd grows by at least 512 KiB.
PROBE = """
import ctypes, ctypes.util, sys
{setup}
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Mallinfo2
libc.free(libc.malloc(1 << 20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(512 << 10)
grown = libc.mallinfo2().hblkhd - before
libc.free(block)
import pyarrow
print(grown >= 512 << 10, pyarrow.default_memory_pool().backend_name)
"""


def probe(setup: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("ARROW_DEFAULT_MEMORY_POOL", "MALLOC_MMAP_THRESHOLD_")} | env
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], cwd=ROOT, env=environ,
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="mallinfo2 is glibc's (2.33+)")
def test_importing_the_prepare_stage_fixes_the_mmap_threshold_and_the_arrow_pool():
    # the baseline shows what the probe measures: without the settings, the block lands in the heap
    grown, pool = probe("")
    assert grown == "False" and pool != "system"
    assert probe("import stages.prepare") == ["True", "system"]


@pytest.mark.skipif(not GLIBC, reason="mallinfo2 is glibc's (2.33+)")
def test_what_the_user_set_wins():
    assert probe("import stages.prepare", ARROW_DEFAULT_MEMORY_POOL="jemalloc",
                 MALLOC_MMAP_THRESHOLD_="4194304") == ["False", "jemalloc"]
