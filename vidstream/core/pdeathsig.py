"""Children die with their parent: Linux's `PR_SET_PDEATHSIG`, set between fork and exec.

Every child vidstream starts (FFmpeg, the Whisper server and its decoder, probes) runs in a
session of its own, so that stopping it stops all it started; but then nothing else stops it when
its worker is killed with SIGKILL: an FFmpeg went on writing for seconds while another worker
re-rendered the job. With the death signal set, the kernel sends it the moment the parent dies,
whatever supervises the worker. No dependencies: the Whisper server imports this too.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    return None


_PRCTL = _prctl()  # looked up once, in the parent: the child only calls it


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child receive `sig` when this process dies; None where the
    platform has no such thing. `signal.SIGTERM` lets a child that saves state on it (Redis
    writing its AOF) do so."""
    if _PRCTL is None:
        return None
    prctl, parent = _PRCTL, os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork and prctl: then no signal would ever come.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec
