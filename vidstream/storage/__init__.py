"""Object storage behind one interface: `LocalStore` (embedded default), `S3Store` (R2/S3/MinIO)."""

from __future__ import annotations

from pathlib import Path

from vidstream.core.errors import ConfigError
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer
from vidstream.storage.base import ObjectInfo, ObjectStore, Place
from vidstream.storage.local import LocalStore

__all__ = ["LocalStore", "ObjectInfo", "ObjectStore", "Place", "open_store"]


def open_store(settings: Settings, signer: Signer) -> ObjectStore:
    """The backend `VIDSTREAM_STORAGE` names (call `start()` or use `async with`)."""
    if settings.storage == "local":
        return LocalStore(Path(settings.data_dir) / "storage", signer, settings.gateway_url)
    if settings.storage == "s3":
        from vidstream.storage.s3 import S3Store  # aioboto3 loads only when it is used

        return S3Store(settings)
    raise ConfigError(f"VIDSTREAM_STORAGE={settings.storage!r} is not supported")
