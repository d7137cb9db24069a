"""The `ObjectStore` interface every storage backend implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path

from vidstream.core.lifecycle import Component


@dataclass(frozen=True, slots=True)
class Place:
    """Which files a store reaches. Stores of the same `backend` and `id` see the same objects,
    and every process of one deployment must (`state.sharing` checks it at start)."""

    backend: str  # "local" or "s3"
    id: str  # local: the id written into the folder (`LocalStore.place`); s3: the bucket
    where: str  # for people, in messages: "local storage /srv/data/storage on host-a"

    @property
    def key(self) -> str:
        """What must be equal for two stores to see the same files."""
        return f"{self.backend}:{self.id}"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


class ObjectStore(Component, abc.ABC):
    """Async object storage. Keys are checked with `names.check_key` before any I/O."""

    name: str

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise `StorageError` unless the store can be read and written."""

    @abc.abstractmethod
    async def place(self) -> Place:
        """Which files this store reaches (after `start()`)."""

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size and type, or None when it does not exist."""

    @abc.abstractmethod
    async def put_file(self, key: str, path: Path, content_type: str) -> ObjectInfo:
        """Store the file at `path` under `key`, replacing any object there."""

    @abc.abstractmethod
    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], content_type: str, max_size: int
    ) -> ObjectInfo:
        """Store a stream of bytes; raise `ObjectTooLarge` past `max_size` bytes."""

    @abc.abstractmethod
    async def get_file(self, key: str, dest: Path, max_size: int | None = None) -> ObjectInfo:
        """Copy the object to `dest`, streaming (memory stays flat whatever its size); raise
        `ObjectNotFound` if it does not exist, `ObjectTooLarge` past `max_size` bytes (leaving
        no file at `dest`)."""

    @abc.abstractmethod
    async def get_bytes(self, key: str, max_size: int = 64 * 1024**2) -> bytes:
        """The object's bytes (for small objects such as transcripts)."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""

    @abc.abstractmethod
    async def presign_put(self, key: str, content_type: str, max_size: int, expires_s: int) -> str:
        """A URL a client can PUT the object's bytes to, without other credentials."""

    @abc.abstractmethod
    async def presign_get(self, key: str, filename: str, expires_s: int) -> str:
        """A URL a client can GET the object from, downloading it as `filename`."""

    def upload_headers(self, content_type: str) -> dict[str, str]:
        """The headers a client must send with its PUT to a `presign_put` URL."""
        return {"Content-Type": content_type}

    def local_path(self, key: str) -> Path | None:
        """The object's path on this machine when the store is a local directory, else None."""
        return None
