"""The embedded default backend: objects as files under one directory.

Its URLs point at the gateway's `/v1/objects/{key}`, signed with HMAC and expiring, so browsers
upload and download the same way they would with presigned S3 URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import stat
import time
from collections.abc import AsyncIterable
from pathlib import Path

from vidstream.errors import InvalidKey, ObjectNotFound, ObjectTooLarge, StorageError
from vidstream.signing import Signer
from vidstream.storage.base import ObjectInfo, ObjectStore
from vidstream.storage.names import check_key, content_type_for, too_large

_BATCH = 1024 * 1024  # write to disk in batches this size, off the event loop
# Partial files of uploads that died with their process. Younger ones may belong to another
# process sharing the data dir, still writing.
PARTIAL_MAX_AGE_S = 24 * 3600


class LocalStore(ObjectStore):
    name = "local"

    def __init__(self, root: Path, signer: Signer, base_url: str) -> None:
        self.root = Path(root).resolve()
        self.signer = signer
        # The gateway's URL as clients reach it. The entry point may set it once the gateway has
        # bound its port (port 0 in tests), before any URL is handed out.
        self.base_url = base_url.rstrip("/")
        self._partial = self.root / ".partial"

    async def start(self) -> None:
        self._partial.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_sweep, self._partial, PARTIAL_MAX_AGE_S)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def check(self) -> None:
        probe = self._partial / f"ready-{secrets.token_hex(4)}"
        try:
            await asyncio.to_thread(probe.write_bytes, b"ok")
            await asyncio.to_thread(probe.unlink)
        except OSError as exc:
            raise StorageError(f"local storage at {self.root} is not writable: {exc}") from exc

    async def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        # One stat on the loop: a local metadata read takes microseconds, and a thread hop cost
        # the gateway 8% of each POST /v1/jobs (bench/gateway.py).
        try:
            found = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(found.st_mode):
            return None
        return ObjectInfo(key, found.st_size, content_type_for(key))

    async def put_file(self, key: str, path: Path, content_type: str) -> ObjectInfo:
        dest = self._path(key)
        tmp = self._partial_path()
        try:
            await asyncio.to_thread(_link_or_copy, path, tmp)
            await asyncio.to_thread(_publish, tmp, dest)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _store_error(key, exc) from exc
            raise
        return ObjectInfo(key, dest.stat().st_size, content_type)

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], content_type: str, max_size: int
    ) -> ObjectInfo:
        dest = self._path(key)
        tmp = self._partial_path()
        size = 0
        try:
            f = await asyncio.to_thread(open, tmp, "wb")
        except OSError as exc:
            raise StorageError(f"could not store {key}: {exc}") from exc
        try:
            batch = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if size > max_size:
                    raise too_large(max_size)
                batch += chunk
                if len(batch) >= _BATCH:
                    await asyncio.to_thread(f.write, batch)
                    batch = bytearray()
            await asyncio.to_thread(f.write, batch)
            await asyncio.to_thread(f.close)
            await asyncio.to_thread(_publish, tmp, dest)
        except BaseException as exc:
            f.close()
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _store_error(key, exc) from exc
            raise
        return ObjectInfo(key, size, content_type)

    async def get_file(self, key: str, dest: Path, max_size: int | None = None) -> ObjectInfo:
        src = self._path(key)
        try:
            if max_size is None:
                await asyncio.to_thread(shutil.copyfile, src, dest)
            else:
                await asyncio.to_thread(_copy_at_most, src, dest, max_size)
            size = (await asyncio.to_thread(dest.stat)).st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"no object at {key}") from None
        return ObjectInfo(key, size, content_type_for(key))

    async def get_bytes(self, key: str, max_size: int = 64 * 1024**2) -> bytes:
        info = await self.head(key)
        if info is None:
            raise ObjectNotFound(f"no object at {key}")
        if info.size > max_size:
            raise ObjectTooLarge(f"{key} is {info.size} bytes, more than {max_size} expected")
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def presign_put(self, key: str, content_type: str, max_size: int, expires_s: int) -> str:
        check_key(key)
        expires = int(time.time()) + expires_s
        return self.signer.object_url(self.base_url, "PUT", key, expires, max_size=max_size)

    async def presign_get(self, key: str, filename: str, expires_s: int) -> str:
        check_key(key)
        expires = int(time.time()) + expires_s
        return self.signer.object_url(self.base_url, "GET", key, expires, filename=filename)

    def _partial_path(self) -> Path:
        return self._partial / f"{os.getpid()}-{secrets.token_hex(8)}"


def _publish(tmp: Path, dest: Path) -> None:
    # Readers see the whole object or none of it: rename is atomic within one filesystem.
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)


def _copy_at_most(src: Path, dest: Path, max_size: int) -> None:
    """Copy in batches, counting: past `max_size` bytes stop and leave nothing at `dest`."""
    copied = 0
    try:
        with src.open("rb") as fin, dest.open("wb") as fout:
            while batch := fin.read(_BATCH):
                copied += len(batch)
                if copied > max_size:
                    raise too_large(max_size)
                fout.write(batch)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _link_or_copy(src: Path, dest: Path) -> None:
    # Workers write outputs next to the store (both under the data dir): a hard link stores a
    # rendered video without copying it; across filesystems, copy.
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _sweep(directory: Path, max_age_s: float) -> None:
    cutoff = time.time() - max_age_s
    for path in directory.iterdir():
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()


def _store_error(key: str, exc: OSError) -> StorageError:
    # A key whose folder is a file (or whose name is a folder) is the key's fault: no disk can
    # hold it. Disk full or permissions are the store's.
    if isinstance(exc, NotADirectoryError | IsADirectoryError | FileExistsError):
        return InvalidKey("the key names a place under or at another object")
    return StorageError(f"could not store {key}: {exc}")
