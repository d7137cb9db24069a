"""Subprocesses (FFmpeg, Whisper, probes) as asyncio processes in their own process group.

Each child starts a new session, so stopping it stops everything it started (the Whisper server's
FFmpeg decoder included): SIGTERM to the group, a bounded wait, then SIGKILL. Each child also dies
with its parent (`pdeathsig`): a worker killed with SIGKILL leaves no FFmpeg writing behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from vidstream.core import logs
from vidstream.core.pdeathsig import die_with_parent

log = logs.get()

PIPE = asyncio.subprocess.PIPE
STDOUT = asyncio.subprocess.STDOUT
DEVNULL = asyncio.subprocess.DEVNULL


async def spawn(
    argv: Sequence[str],
    *,
    stdin: int | None = DEVNULL,
    stdout: int | None = PIPE,
    stderr: int | None = PIPE,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    limit: int = 2**16,
    death_signal: int = signal.SIGKILL,
) -> asyncio.subprocess.Process:
    """Start `argv` in a session of its own, sent `death_signal` if this process dies first."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=None if env is None else dict(env),
        start_new_session=True,
        preexec_fn=die_with_parent(death_signal),
        limit=limit,
    )


async def terminate(proc: asyncio.subprocess.Process, grace_s: float = 2.0) -> None:
    """Stop the process and its group: SIGTERM, wait up to `grace_s`, then SIGKILL."""
    if proc.returncode is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace_s):
            await proc.wait()
    except TimeoutError:
        pass
    # Also once the leader is gone: a child of its that ignored SIGTERM (or had not died yet)
    # must not outlive it.
    _signal_group(proc, signal.SIGKILL)
    if proc.returncode is not None:
        return
    # SIGKILL cannot be ignored; the bound only guards against a zombie nobody reaps.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5.0):
            await proc.wait()


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # the group leader is gone and the id was reused; signal it alone
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


@contextlib.asynccontextmanager
async def running(proc: asyncio.subprocess.Process, grace_s: float = 2.0) -> AsyncIterator[None]:
    """Stop `proc` (and its group) when the block exits early, by error or by cancellation."""
    try:
        yield
    finally:
        # Shielded so that a cancelled job still waits for its subprocess to be gone.
        await asyncio.shield(terminate(proc, grace_s))


class Tail:
    """Drains a stream (a child's stderr) in the background, keeping only its last lines."""

    def __init__(self, stream: asyncio.StreamReader | None, lines: int = 40) -> None:
        self._lines: deque[str] = deque(maxlen=lines)
        self._task = asyncio.create_task(self._drain(stream)) if stream else None

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        # read(), not readline(): a line longer than the reader's limit must not stop the
        # draining, or the child blocks on a full pipe.
        pending = b""
        while chunk := await stream.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            self._lines.extend(line.decode(errors="replace").rstrip()[:2000] for line in lines)
            pending = pending[-65536:]
        if pending:
            self._lines.append(pending.decode(errors="replace").rstrip()[:2000])

    async def text(self, timeout_s: float = 2.0) -> str:
        """What the stream said last, once it has closed (or after `timeout_s`)."""
        if self._task:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self._task)
        return "\n".join(self._lines)

    def cancel(self) -> None:
        if self._task:
            self._task.cancel()


async def run(
    argv: Sequence[str],
    timeout_s: float,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, bytes, str]:
    """Run to completion within `timeout_s`: (exit code, stdout, last lines of stderr)."""
    proc = await spawn(argv, cwd=cwd, env=env)
    stderr = Tail(proc.stderr)
    async with running(proc):
        async with asyncio.timeout(timeout_s):
            assert proc.stdout is not None
            out = await proc.stdout.read()
            code = await proc.wait()
    return code, out, await stderr.text()
