"""Children die with their worker, however it dies: no FFmpeg writes on after a SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from tests.faults import wait_exit

ROOT = Path(__file__).resolve().parent.parent

# A stand-in for a worker: it starts a long child the way every role does, says its PID, waits.
PARENT = """
import asyncio, sys
from vidstream.core import process

async def main() -> None:
    child = await process.spawn([sys.argv[1], "-c", "import time; time.sleep(60)"])
    print(child.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
async def test_a_child_dies_with_its_killed_parent(sig: signal.Signals) -> None:
    """The parent is killed (SIGKILL cannot be caught; SIGTERM here is not handled): its child,
    in a session of its own, is gone within a second or two."""
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, sys.executable, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    async with asyncio.timeout(20):
        child = int(await parent.stdout.readline())
    parent.send_signal(sig)
    await parent.wait()
    await wait_exit(child, timeout_s=5.0)
