"""Keep large transfer buffers from lingering in the heap (glibc only; a no-op elsewhere).

glibc serves big allocations with mmap and returns them on free, but after the first such free
it raises its threshold to that size, so later multi-MiB buffers (S3 parts, audio chunks) come
from per-thread heaps that keep the pages. Peak memory then drifts with how threads were used:
measured 31 to 88 MB for the same 300 MB upload. A fixed threshold keeps it at about 45 MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed


def pin_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold; return whether it took effect."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to pin
        return False
