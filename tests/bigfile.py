"""Child process for the large-file test: moves N MB through a store and reports its peak RSS.

    python -m tests.bigfile SIZE_MB WORKDIR    (settings from the environment)

Prints one JSON line: the peak RSS (VmHWM) once the store has started, and at the end. The
peak is reset after start-up (/proc/self/clear_refs), so it measures the transfer alone.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from vidstream.core import malloc
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer
from vidstream.storage import open_store

MiB = 1024 * 1024


def peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


async def stream(size: int) -> AsyncIterator[bytes]:
    chunk = b"v" * MiB
    for _ in range(size // MiB):
        yield chunk


async def main(size_mb: int, workdir: Path) -> None:
    malloc.pin_mmap_threshold()  # as `vidstream` does when it starts
    settings = Settings.from_env()
    size = size_mb * MiB
    source = workdir / "big.bin"
    with source.open("wb") as f:  # made by the test: sparse, so it costs no disk and no memory
        f.truncate(size)
    async with open_store(settings, Signer(b"bigfile")) as store:
        Path("/proc/self/clear_refs").write_text("5")
        start = peak_rss_kb()
        await store.put_file("uploads/big/file.bin", source, "video/mp4")
        copy = workdir / "copy.bin"
        got = await store.get_file("uploads/big/file.bin", copy)
        streamed = await store.put_stream("uploads/big/stream.bin", stream(size), "video/mp4", size)
        end = peak_rss_kb()
        sizes = [got.size, copy.stat().st_size, streamed.size]
        await store.delete("uploads/big/file.bin")
        await store.delete("uploads/big/stream.bin")
    print(json.dumps({"start_kb": start, "peak_kb": end, "sizes": sizes}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
