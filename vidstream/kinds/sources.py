"""Where a stage finds the job's source (or a compose job's assets): in place with local
storage, else downloaded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vidstream.core.errors import ObjectNotFound, ObjectTooLarge, PermanentError
from vidstream.job.model import Job
from vidstream.storage.base import ObjectStore


async def source_path(store: ObjectStore, job: Job, workdir: Path, max_bytes: int) -> Path:
    """The source as a local file: in place for local storage, else downloaded to `workdir`.
    A source that no longer exists fails the job (`source_not_found`); one larger than
    `max_bytes` (replaced since the job was made: an upload link outlives its first use) fails
    it `too_large`, before a byte of it is downloaded."""
    dest = workdir / ("source" + Path(job.source_key).suffix[:10])
    return await object_path(store, job.source_key, dest, max_bytes, what="source")


async def object_path(
    store: ObjectStore, key: str, dest: Path, max_bytes: int, *, what: str
) -> Path:
    """The object at `key` as a local file: in place for local storage, else downloaded to
    `dest`; `source_not_found` or `too_large` (see `source_path`) naming it as `what`."""
    missing = PermanentError(f"The {what} {key} no longer exists.", code="source_not_found")
    local = store.local_path(key)
    if local is not None:
        try:
            stat = await asyncio.to_thread(local.stat)
        except FileNotFoundError:
            raise missing from None
        if not await asyncio.to_thread(local.is_file):
            raise missing
        if stat.st_size > max_bytes:
            raise _too_large(what, max_bytes)
        return local
    info = await store.head(key)
    if info is None:
        raise missing
    if info.size > max_bytes:
        raise _too_large(what, max_bytes)
    try:
        await store.get_file(key, dest, max_size=max_bytes)
    except ObjectNotFound:
        raise missing from None
    except ObjectTooLarge:  # grew between the look and the download
        raise _too_large(what, max_bytes) from None
    return dest


def _too_large(what: str, max_bytes: int) -> ObjectTooLarge:
    return ObjectTooLarge(f"The {what} is larger than {max_bytes} bytes, the largest accepted.")


def link_or_copy(path: Path, dest: Path) -> None:
    """`path` also as `dest` (a hard link where the file system allows, else a symbolic one),
    for a tool that reads files by their names in one directory."""
    dest.unlink(missing_ok=True)
    try:
        dest.hardlink_to(path)
    except OSError:
        dest.symlink_to(path)
