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
import socket
import stat
import time
from collections.abc import AsyncIterable, Iterator
from pathlib import Path

from vidstream.core.errors import InvalidKey, ObjectNotFound, ObjectTooLarge, StorageError
from vidstream.core.signing import Signer
from vidstream.core.tasks import cancel_and_wait, every
from vidstream.storage.base import ObjectInfo, ObjectStore, Place
from vidstream.storage.names import check_key, content_type_for, too_large

_BATCH = 1024 * 1024  # write to disk in batches this size, off the event loop
_PUBLISH_TRIES = 5  # renames into a folder that concurrent deletes keep removing
# Partial files of writes that died with their process (a killed gateway's uploads) go once
# nothing has touched them for PARTIAL_IDLE_S; every process sweeps every PARTIAL_SWEEP_S. A
# live upload writes every megabyte it receives, so only one slower than ~300 bytes/s looks
# idle; a file this process is still writing is never swept (others sharing the data dir are
# judged by age alone).
PARTIAL_IDLE_S = 3600.0
PARTIAL_SWEEP_S = 300.0
# The folder's id, written into it on first use: what `place()` says this store reaches.
ID_FILE = ".identity"


class LocalStore(ObjectStore):
    name = "local"

    def __init__(self, root: Path, signer: Signer, base_url: str) -> None:
        self.root = Path(root).resolve()
        self.signer = signer
        # The gateway's URL as clients reach it. The entry point may set it once the gateway has
        # bound its port (port 0 in tests), before any URL is handed out.
        self.base_url = base_url.rstrip("/")
        self._partial = self.root / ".partial"
        self._writing: set[Path] = set()  # this process's partial files, still being written
        self._sweeper: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        if self._sweeper is not None:
            return
        self._partial.mkdir(parents=True, exist_ok=True)
        await self.sweep_partials()
        self._stop.clear()
        self._sweeper = asyncio.create_task(
            every(PARTIAL_SWEEP_S, self.sweep_partials, "partials", self._stop),
            name="local-store-partials",
        )

    async def close(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            self._stop.set()
            await cancel_and_wait([sweeper])

    async def sweep_partials(self, now: float | None = None) -> int:
        """Remove the partial files nobody wrote to for PARTIAL_IDLE_S; return how many."""
        now = time.time() if now is None else now
        writing = frozenset(self._writing)
        return await asyncio.to_thread(_sweep, self._partial, now - PARTIAL_IDLE_S, writing)

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

    async def place(self) -> Place:
        """The folder is known by an id written into it, not by its path or its host: processes
        see the same files exactly when they read the same id (several on one machine sharing
        its data dir, hosts mounting one share, containers with one volume), by whatever path
        each names it. A folder on another host has an id of its own."""
        try:
            found = await asyncio.to_thread(_folder_id, self.root / ID_FILE, self._partial)
        except OSError as exc:
            raise StorageError(f"local storage at {self.root} is not writable: {exc}") from exc
        return Place("local", found, f"local storage {self.root} on {socket.gethostname()}")

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
        with self._partial_file(key) as tmp:
            await asyncio.to_thread(_link_or_copy, path, tmp)
            await asyncio.to_thread(_publish, tmp, dest)
        return ObjectInfo(key, dest.stat().st_size, content_type)

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], content_type: str, max_size: int
    ) -> ObjectInfo:
        dest = self._path(key)
        with self._partial_file(key) as tmp:
            size = await _receive(tmp, chunks, max_size)
            await asyncio.to_thread(_publish, tmp, dest)
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
        await asyncio.to_thread(_remove, self._path(key), (self.root, self._partial))

    async def presign_put(self, key: str, content_type: str, max_size: int, expires_s: int) -> str:
        check_key(key)
        expires = int(time.time()) + expires_s
        return self.signer.object_url(self.base_url, "PUT", key, expires, max_size=max_size)

    async def presign_get(self, key: str, filename: str, expires_s: int) -> str:
        check_key(key)
        expires = int(time.time()) + expires_s
        return self.signer.object_url(self.base_url, "GET", key, expires, filename=filename)

    @contextlib.contextmanager
    def _partial_file(self, key: str) -> Iterator[Path]:
        """A fresh partial file to write `key` in, kept from the sweep while in use; when the
        write fails it goes, and an OSError becomes the store's error."""
        tmp = self._partial / f"{os.getpid()}-{secrets.token_hex(8)}"
        self._writing.add(tmp)
        try:
            yield tmp
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _store_error(key, exc) from exc
            raise
        finally:
            self._writing.discard(tmp)


async def _receive(tmp: Path, chunks: AsyncIterable[bytes], max_size: int) -> int:
    """Write `chunks` to `tmp` in batches, off the loop; return the size."""
    size = 0
    f = await asyncio.to_thread(open, tmp, "wb")
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
    except BaseException:
        f.close()
        raise
    await asyncio.to_thread(f.close)
    return size


def _publish(tmp: Path, dest: Path) -> None:
    # Readers see the whole object or none of it: rename is atomic within one filesystem.
    # A delete in the same folder may remove it between our mkdir and our rename (`_remove`):
    # then make it again.
    for attempt in range(_PUBLISH_TRIES):
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
            return
        except FileNotFoundError:
            if attempt == _PUBLISH_TRIES - 1 or not tmp.exists():
                raise


def _remove(path: Path, keep: tuple[Path, ...]) -> None:
    """Delete the object at `path` and the folders it leaves empty (a job's folder would stay
    forever otherwise), up to the store's root; never a folder in `keep`."""
    path.unlink(missing_ok=True)
    # rmdir removes only an empty folder, in one step: a file a writer put there meanwhile
    # stops it, and a writer that loses its folder after its mkdir makes it again (`_publish`).
    for folder in path.parents:
        if folder in keep or not folder.is_relative_to(keep[0]):
            return
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): so are the folders above it
            return


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


def _folder_id(path: Path, partial: Path) -> str:
    """The id in `path`, written first if there is none. Made as a whole file beside it and
    linked into place: of processes starting at once, one id wins and all of them read it."""
    if found := _read_id(path):
        return found
    made = partial / f"identity-{secrets.token_hex(4)}"
    made.write_text(secrets.token_hex(16))
    try:
        os.link(made, path)
    except FileExistsError:
        if not _read_id(path):  # an empty file (a disk that lost it): ours replaces it
            os.replace(made, path)
    finally:
        made.unlink(missing_ok=True)
    return _read_id(path)


def _read_id(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _sweep(directory: Path, cutoff: float, writing: frozenset[Path]) -> int:
    """Unlink the files of `directory` unchanged since `cutoff`, except those in `writing`."""
    removed = 0
    with contextlib.suppress(OSError):  # the folder itself is gone: nothing to sweep
        for path in directory.iterdir():
            if path in writing:
                continue
            with contextlib.suppress(OSError):  # gone meanwhile: published or swept by another
                # The inode's change time: a write moves it, and so does the hard link that
                # `put_file` makes (the linked file's own mtime may be much older).
                if path.lstat().st_ctime < cutoff:
                    path.unlink()
                    removed += 1
    return removed


def _store_error(key: str, exc: OSError) -> StorageError:
    # A key whose folder is a file (or whose name is a folder) is the key's fault: no disk can
    # hold it. Disk full or permissions are the store's.
    if isinstance(exc, NotADirectoryError | IsADirectoryError | FileExistsError):
        return InvalidKey("the key names a place under or at another object")
    return StorageError(f"could not store {key}: {exc}")
