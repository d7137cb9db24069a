"""Child process of bench/memory.py: a large object through a store's own calls, as a worker
or the gateway makes them, with this process's RSS around each call.

    python bench/memory_store.py SIZE_MB WORKDIR SOURCE_KEY [--stream]
    (settings from the environment; SOURCE_KEY: an object of SIZE_MB already in the store, or
    `-`: the object put_stream stores, which --stream then implies)

Prints one JSON line, a list of operations in the order run:
  put_stream  (with --stream) 1 MiB chunks made on the fly (`b"v" * MiB`, one buffer reused), as
              the gateway hands a request body to the store: upload into the store; the object
              is deleted right after;
  get_file    SOURCE_KEY copied to WORKDIR/copy.bin, as a worker fetches a source: download out;
  put_file    WORKDIR/copy.bin stored again, as a worker stores a rendered video: upload in
              (a hard link with local storage when both are on one filesystem: no byte moves).
For each: `base_kb` (VmRSS just before, once the peak was reset with /proc/self/clear_refs),
`peak_kb` (VmHWM just after: the true peak of the call, not a sample), `seconds`, `bytes`. What
this process stored and the copy are removed at the end; SOURCE_KEY is left to the caller.
`start_kb` is VmRSS once the store has started.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from vidstream.core import malloc
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer
from vidstream.storage import open_store

MiB = 1024 * 1024


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Reset VmHWM to the current RSS; return that RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_kb("VmRSS")


async def stream(size: int) -> AsyncIterator[bytes]:
    chunk = b"v" * MiB
    left = size
    while left > 0:
        yield chunk if left >= MiB else chunk[:left]
        left -= MiB


async def main(size_mb: int, workdir: Path, source_key: str, streamed: bool) -> None:
    malloc.pin_mmap_threshold()  # as `vidstream` does when it starts
    settings = Settings.from_env()
    size = size_mb * MiB
    copy = workdir / "copy.bin"
    ops: list[dict[str, Any]] = []

    async def measured(name: str, call: Any) -> None:
        base = reset_peak()
        started = time.perf_counter()
        info = await call
        seconds = time.perf_counter() - started
        ops.append({"op": name, "base_kb": base, "peak_kb": status_kb("VmHWM"),
                    "seconds": round(seconds, 3), "bytes": info.size})  # fmt: skip

    async with open_store(settings, Signer(b"bench-memory")) as store:
        start = status_kb("VmRSS")
        streamed_key = "uploads/bench/stream.bin"
        try:
            if streamed or source_key == "-":
                await measured(
                    "put_stream", store.put_stream(streamed_key, stream(size), "video/mp4", size)
                )
                if source_key == "-":
                    source_key = streamed_key
                else:
                    await store.delete(streamed_key)  # the disk holds one copy less
            await measured("get_file", store.get_file(source_key, copy))
            await measured("put_file", store.put_file("uploads/bench/file.bin", copy, "video/mp4"))
        finally:
            for key in (streamed_key, "uploads/bench/file.bin"):
                await store.delete(key)
            copy.unlink(missing_ok=True)
    print(json.dumps({"store": settings.storage, "start_kb": start, "ops": ops}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], "--stream" in sys.argv[4:]))
