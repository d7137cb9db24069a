"""Where a stage finds the job's source: in place with local storage, else downloaded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vidstream.errors import ObjectNotFound, ObjectTooLarge, PermanentError
from vidstream.jobs import Job
from vidstream.storage.base import ObjectStore


async def source_path(store: ObjectStore, job: Job, workdir: Path, max_bytes: int) -> Path:
    """The source as a local file: in place for local storage, else downloaded to `workdir`.
    A source that no longer exists fails the job (`source_not_found`); one larger than
    `max_bytes` (replaced since the job was made: an upload link outlives its first use) fails
    it `too_large`, before a byte of it is downloaded."""
    missing = PermanentError(
        f"The source {job.source_key} no longer exists.", code="source_not_found"
    )
    local = store.local_path(job.source_key)
    if local is not None:
        try:
            stat = await asyncio.to_thread(local.stat)
        except FileNotFoundError:
            raise missing from None
        if not await asyncio.to_thread(local.is_file):
            raise missing
        if stat.st_size > max_bytes:
            raise _too_large(max_bytes)
        return local
    info = await store.head(job.source_key)
    if info is None:
        raise missing
    if info.size > max_bytes:
        raise _too_large(max_bytes)
    dest = workdir / ("source" + Path(job.source_key).suffix[:10])
    try:
        await store.get_file(job.source_key, dest, max_size=max_bytes)
    except ObjectNotFound:
        raise missing from None
    except ObjectTooLarge:  # grew between the look and the download
        raise _too_large(max_bytes) from None
    return dest


def _too_large(max_bytes: int) -> ObjectTooLarge:
    return ObjectTooLarge(f"The source is larger than {max_bytes} bytes, the largest accepted.")
