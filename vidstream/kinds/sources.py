"""Where a stage finds the job's source (or a compose job's assets): in place with local
storage, else downloaded."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from vidstream.core.errors import ObjectNotFound, ObjectTooLarge, PermanentError
from vidstream.job.model import Job
from vidstream.storage.base import ObjectStore


async def source_path(
    store: ObjectStore, job: Job, workdir: Path, max_bytes: int,
    downloads: Downloads | None = None,
) -> Path:  # fmt: skip
    """The source as a local file: in place for local storage, else downloaded to `workdir`
    (through `downloads`, when given: once for all of this worker's runs of the job). A source
    that no longer exists fails the job (`source_not_found`); one larger than `max_bytes`
    (replaced since the job was made: an upload link outlives its first use) fails it
    `too_large`, before a byte of it is downloaded."""
    dest = workdir / ("source" + Path(job.source_key).suffix[:10])
    return await kept_path(store, job.source_key, dest, max_bytes, downloads, what="source")


async def kept_path(
    store: ObjectStore, key: str, dest: Path, max_bytes: int, downloads: Downloads | None,
    *, what: str,
) -> Path:  # fmt: skip
    """`object_path`, through `downloads` when given (a bucket's object downloaded once for
    all of this worker's runs, linked as `dest`)."""
    if downloads is not None and store.local_path(key) is None:
        kept = await downloads.fetch(store, key, max_bytes, what)
        await asyncio.to_thread(link_or_copy, kept, dest)
        return dest
    return await object_path(store, key, dest, max_bytes, what=what)


async def fetched_as(store: ObjectStore, key: str, workdir: Path, name: str, max_bytes: int) -> str:
    """A stored segment as `name` in `workdir` (in place with local storage, else downloaded),
    for a tool that reads files by their names in one directory (the concat demuxer)."""
    path = await object_path(store, key, workdir / name, max_bytes, what="segment")
    if path != workdir / name:
        await asyncio.to_thread(link_or_copy, path, workdir / name)
    return name


class Downloads:
    """The sources a worker downloaded last (S3, R2), kept for its next runs of the same job: a
    long source's pieces, worked one after another by the same worker, download it once, not
    once each. A run gets a hard link in its own directory, so evicting a source (beyond the
    `keep` most recently asked for) never pulls it from under a run that still reads it: its
    bytes go when the last run using them removes its directory."""

    def __init__(self, root: Callable[[], Path], keep: int = 2) -> None:
        self._root, self.keep = root, keep  # `root`: the worker's directory is named at start
        self._paths: OrderedDict[str, Path] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def fetch(
        self, store: ObjectStore, key: str, max_bytes: int, what: str = "source"
    ) -> Path:
        """The object at `key`, downloaded once (the first asker downloads, others wait)."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            path = self._paths.get(key)
            if path is not None and await asyncio.to_thread(path.is_file):
                self._paths.move_to_end(key)
                return path
            root = self._root() / "downloads"
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
            name = hashlib.sha256(key.encode()).hexdigest()[:32] + Path(key).suffix[:10]
            path = await object_path(store, key, root / name, max_bytes, what=what)
            self._paths[key] = path
        while len(self._paths) > self.keep:
            gone, old = self._paths.popitem(last=False)
            self._locks.pop(gone, None)
            await asyncio.to_thread(old.unlink, True)
        return path

    async def clear(self) -> None:
        """Delete every kept download (the worker is stopping)."""
        while self._paths:
            _, old = self._paths.popitem()
            await asyncio.to_thread(old.unlink, True)


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
    """`path` also as `dest`: a hard link where the file system allows (its bytes stay while
    either name does, so a kept download may be evicted under a run), else a copy."""
    dest.unlink(missing_ok=True)
    try:
        dest.hardlink_to(path)
    except OSError:
        shutil.copyfile(path, dest)
