"""Where a stage finds the job's source: in place with local storage, else downloaded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vidstream.errors import ObjectNotFound, PermanentError
from vidstream.jobs import Job
from vidstream.storage.base import ObjectStore


async def source_path(store: ObjectStore, job: Job, workdir: Path) -> Path:
    """The source as a local file: in place for local storage, else downloaded to `workdir`.
    A source that no longer exists fails the job (`source_not_found`)."""
    missing = PermanentError(
        f"The source {job.source_key} no longer exists.", code="source_not_found"
    )
    local = store.local_path(job.source_key)
    if local is not None:
        if not await asyncio.to_thread(local.is_file):
            raise missing
        return local
    dest = workdir / ("source" + Path(job.source_key).suffix[:10])
    try:
        await store.get_file(job.source_key, dest)
    except ObjectNotFound:
        raise missing from None
    return dest
