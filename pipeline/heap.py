"""Allocator settings for the stages that stream a large table: keep freed memory from piling up.

Measured on prepare at 1M rows (benchmarks/RESULTS.md, "prepare's allocators"): the live data is tens of
MB, yet RSS grew by about 220 MB over the first pass, nearly all of it memory the allocators had freed and kept.
Two allocators keep it:
- glibc's malloc raises its mmap threshold each time a large block is freed (the "dynamic" threshold),
  so later large buffers (Arrow batches, numpy arrays of a batch) come from the heap, where holes
  between them cannot be returned to the OS. A fixed threshold keeps every block >= 128 KiB on its own
  mapping, given back on free.
- Arrow's default pool (mimalloc) keeps freed pages for reuse; the system pool (malloc, so the rule
  above) does not.
Call `lean_heap()` before pyarrow is imported (the pool is chosen at first use of pyarrow, from the
environment); the mallopt part works at any time but only for blocks allocated after it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # glibc malloc.h; setting it also turns the dynamic threshold off
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None  # musl and macOS have no mallopt


def lean_heap() -> bool:
    """Fix glibc's mmap threshold at 128 KiB and make Arrow use the system allocator.

    Both respect what the user set: MALLOC_MMAP_THRESHOLD_ (read by glibc at start) and
    ARROW_DEFAULT_MEMORY_POOL win. Returns whether the mallopt call took effect (False off glibc).
    """
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)
