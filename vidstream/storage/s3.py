"""R2, S3 and MinIO through aioboto3: one client per process, SigV4, presigned URLs.

Large objects go up as multipart uploads with at most `concurrency` parts in flight, and come
down as a stream written to disk chunk by chunk, so memory stays flat whatever the size: about
(2.5 x concurrency + 1) x part size for an upload (botocore holds a copy of each part it sends),
one chunk for a download.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from vidstream.core.errors import ConfigError, ObjectNotFound, ObjectTooLarge, StorageError
from vidstream.core.settings import Settings
from vidstream.core.tasks import cancel_and_wait
from vidstream.storage.base import ObjectInfo, ObjectStore, Place
from vidstream.storage.names import check_key, content_disposition, too_large

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

_READ_CHUNK = 1024 * 1024
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_REFUSED = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}
)


class S3Store(ObjectStore):
    name = "s3"

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.endpoint = settings.s3_endpoint_url or None
        self.public_url = settings.s3_public_url.rstrip("/")
        self.part_size = settings.s3_multipart_threshold
        self.concurrency = settings.s3_multipart_concurrency
        self._session = aioboto3.Session(
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key or None,
            region_name=settings.s3_region_name,
        )
        self._config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": settings.s3_addressing},
            connect_timeout=settings.s3_timeout_s,
            read_timeout=settings.s3_timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=max(10, 2 * self.concurrency),
        )
        self.presign_endpoint = settings.s3_presign_endpoint_url or None
        self._exit = AsyncExitStack()
        self._client: S3Client | None = None
        self._signer: S3Client | None = None  # presigns for clients; never sends a request

    @property
    def where(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint or 'AWS'}"

    async def start(self) -> None:
        if self._client is None:
            self._client = await self._exit.enter_async_context(
                self._session.client("s3", endpoint_url=self.endpoint, config=self._config)
            )
            self._signer = self._client
            if self.presign_endpoint:
                # A SigV4 signature covers the host, so URLs for clients are signed for theirs.
                self._signer = await self._exit.enter_async_context(
                    self._session.client(
                        "s3", endpoint_url=self.presign_endpoint, config=self._config
                    )
                )

    async def close(self) -> None:
        self._client = self._signer = None
        await self._exit.aclose()

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3Store.start() was not called")
        return self._client

    @property
    def signer(self) -> S3Client:
        if self._signer is None:
            raise RuntimeError("S3Store.start() was not called")
        return self._signer

    async def check(self) -> None:
        """Raise `ConfigError` when the bucket or the credentials are wrong, `StorageError`
        when the endpoint cannot be reached."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket"):
                raise ConfigError(
                    f"S3_BUCKET={self.bucket!r} does not exist at {self.endpoint or 'AWS'}"
                ) from None
            if code in _REFUSED:
                raise ConfigError(
                    f"{self.where} refused AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY ({code})"
                ) from None
            raise StorageError(f"{self.where} answered {code}") from exc
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"{self.where} is unreachable: {exc}") from exc

    async def place(self) -> Place:
        # The bucket alone: hosts may reach one endpoint by different names (minio:9000 inside
        # docker compose, an address outside).
        return Place("s3", self.bucket, self.where)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            with _errors(key):
                meta = await self.client.head_object(Bucket=self.bucket, Key=check_key(key))
        except ObjectNotFound:
            return None
        return ObjectInfo(key, int(meta["ContentLength"]), meta.get("ContentType") or "")

    async def put_file(self, key: str, path: Path, content_type: str) -> ObjectInfo:
        return await self.put_stream(key, _read(path, self.part_size), content_type, 2**62)

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], content_type: str, max_size: int
    ) -> ObjectInfo:
        check_key(key)
        buffer, size = bytearray(), 0
        upload: _Multipart | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_size:
                    raise too_large(max_size)
                if not buffer and len(chunk) == self.part_size:
                    part = chunk  # a whole part already (file reads): no copy
                else:
                    buffer += chunk
                    if len(buffer) < self.part_size:
                        continue
                    part = bytes(memoryview(buffer)[: self.part_size])
                    del buffer[: self.part_size]
                upload = upload or await _Multipart.begin(self, key, content_type)
                await upload.add(part)
                while len(buffer) >= self.part_size:
                    await upload.add(bytes(memoryview(buffer)[: self.part_size]))
                    del buffer[: self.part_size]
            with _errors(key):
                if upload is None:
                    await self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=bytes(buffer), ContentType=content_type
                    )
                else:
                    if buffer:
                        await upload.add(bytes(buffer))
                    await upload.complete()
        except BaseException:
            if upload is not None:
                await asyncio.shield(upload.abort())
            raise
        return ObjectInfo(key, size, content_type)

    async def get_file(self, key: str, dest: Path, max_size: int | None = None) -> ObjectInfo:
        limit = 2**62 if max_size is None else max_size
        size = 0
        try:
            with _errors(key):
                response = await self.client.get_object(Bucket=self.bucket, Key=check_key(key))
                body = response["Body"]
                async with body:  # releases the connection however the loop ends
                    if int(response.get("ContentLength") or 0) > limit:
                        raise too_large(limit)
                    f = await asyncio.to_thread(dest.open, "wb")
                    try:
                        while chunk := await body.read(_READ_CHUNK):
                            size += len(chunk)
                            if size > limit:  # more than the length it announced
                                raise too_large(limit)
                            await asyncio.to_thread(f.write, chunk)
                    finally:
                        await asyncio.to_thread(f.close)
        except BaseException:
            await asyncio.to_thread(dest.unlink, True)
            raise
        return ObjectInfo(key, size, response.get("ContentType") or "")

    async def get_bytes(self, key: str, max_size: int = 64 * 1024**2) -> bytes:
        with _errors(key):
            response = await self.client.get_object(Bucket=self.bucket, Key=check_key(key))
            body = response["Body"]
            async with body:
                if int(response["ContentLength"]) > max_size:
                    raise ObjectTooLarge(f"{key} is larger than the {max_size} bytes expected")
                return await body.read()

    async def delete(self, key: str) -> None:
        with _errors(key):
            await self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    async def presign_put(self, key: str, content_type: str, max_size: int, expires_s: int) -> str:
        # A presigned PUT cannot bound the size; the gateway checks it before it enqueues a job.
        # If-None-Match: * (signed, so the client must send it) makes the link single-use: a
        # second PUT finds the object there and fails, so a leaked link cannot swap a source.
        params = {
            "Bucket": self.bucket, "Key": check_key(key), "ContentType": content_type,
            "IfNoneMatch": "*",
        }  # fmt: skip
        return await self.signer.generate_presigned_url(
            "put_object", Params=params, ExpiresIn=expires_s
        )

    def upload_headers(self, content_type: str) -> dict[str, str]:
        return {"Content-Type": content_type, "If-None-Match": "*"}

    async def presign_get(self, key: str, filename: str, expires_s: int) -> str:
        if self.public_url:
            return f"{self.public_url}/{quote(check_key(key))}"
        params = {
            "Bucket": self.bucket,
            "Key": check_key(key),
            "ResponseContentDisposition": content_disposition(filename),
        }
        return await self.signer.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_s
        )


class _Multipart:
    """One multipart upload with at most `store.concurrency` parts in flight."""

    def __init__(self, store: S3Store, key: str, upload_id: str) -> None:
        self.store, self.key, self.upload_id = store, key, upload_id
        self.slots = asyncio.Semaphore(store.concurrency)
        self.tasks: list[asyncio.Task[CompletedPartTypeDef]] = []

    @classmethod
    async def begin(cls, store: S3Store, key: str, content_type: str) -> _Multipart:
        with _errors(key):
            created = await store.client.create_multipart_upload(
                Bucket=store.bucket, Key=key, ContentType=content_type
            )
        return cls(store, key, created["UploadId"])

    async def add(self, data: bytes) -> None:
        """Start uploading the next part; wait first while `concurrency` parts are in flight."""
        for task in self.tasks:
            if task.done() and task.exception():
                raise task.exception()  # type: ignore[misc]
        await self.slots.acquire()
        number = len(self.tasks) + 1
        self.tasks.append(asyncio.create_task(self._part(number, data)))

    async def _part(self, number: int, data: bytes) -> CompletedPartTypeDef:
        try:
            with _errors(self.key):
                result = await self.store.client.upload_part(
                    Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
                    PartNumber=number, Body=data,
                )  # fmt: skip
            return {"PartNumber": number, "ETag": result["ETag"]}
        finally:
            self.slots.release()

    async def complete(self) -> None:
        parts = await asyncio.gather(*self.tasks)
        with _errors(self.key):
            await self.store.client.complete_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": list(parts)},
            )  # fmt: skip

    async def abort(self) -> None:
        await cancel_and_wait(self.tasks)
        with contextlib.suppress(ClientError, BotoCoreError, OSError):
            await self.store.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id
            )


async def _read(path: Path, size: int) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, size):
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _errors(key: str) -> Any:
    """Map botocore failures to the storage errors the rest of vidstream handles."""
    try:
        yield
    except ClientError as exc:
        if _code(exc) in _NOT_FOUND:
            raise ObjectNotFound(f"no object at {key}") from None
        raise StorageError(f"object storage refused {key}: {_code(exc)}") from exc
    except (BotoCoreError, OSError) as exc:
        raise StorageError(f"object storage failed for {key}: {exc}") from exc
