"""One contract for every storage backend: LocalStore, and S3Store on a real moto server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from redis.asyncio import Redis

from vidstream.core.errors import InvalidKey, ObjectNotFound, ObjectTooLarge
from vidstream.core.settings import Settings
from vidstream.runtime import Stack
from vidstream.state.tickets import Ticket, Tickets
from vidstream.storage import ObjectStore

pytestmark = pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)

MiB = 1024 * 1024


@pytest.fixture
async def stack(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    """A gateway (it serves local storage's signed URLs) and the store it uses."""
    async with Stack(make_settings(), ("gateway",)) as running:
        yield running


@pytest.fixture
def store(stack: Stack) -> ObjectStore:
    assert stack.services is not None
    return stack.services.store


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_put_head_get_delete(store: ObjectStore, tmp_path: Path) -> None:
    """What is stored can be read back whole, its size and type known, and removed."""
    src = tmp_path / "in.json"
    src.write_bytes(b'{"hello": "world"}')
    info = await store.put_file("jobs/j1/transcript.json", src, "application/json")
    assert (info.key, info.size) == ("jobs/j1/transcript.json", 18)
    head = await store.head("jobs/j1/transcript.json")
    assert head is not None
    assert (head.size, head.content_type) == (18, "application/json")
    assert await store.get_bytes("jobs/j1/transcript.json") == b'{"hello": "world"}'
    dest = tmp_path / "out.json"
    assert (await store.get_file("jobs/j1/transcript.json", dest)).size == 18
    assert dest.read_bytes() == src.read_bytes()
    await store.delete("jobs/j1/transcript.json")
    assert await store.head("jobs/j1/transcript.json") is None
    await store.delete("jobs/j1/transcript.json")  # deleting twice is fine


async def test_missing_objects(store: ObjectStore, tmp_path: Path) -> None:
    """A missing key reads as None from head and raises ObjectNotFound from get."""
    assert await store.head("uploads/none/x.mp4") is None
    with pytest.raises(ObjectNotFound):
        await store.get_bytes("uploads/none/x.mp4")
    with pytest.raises(ObjectNotFound):
        await store.get_file("uploads/none/x.mp4", tmp_path / "x")


async def test_large_objects_go_in_parts(store: ObjectStore, tmp_path: Path) -> None:
    """A file above the multipart threshold (and a stream of one) round-trips byte for byte."""
    data = os.urandom(12 * MiB + 12345)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    await store.put_file("uploads/a/big.bin", src, "application/octet-stream")
    info = await store.put_stream("uploads/b/big.bin", chunks(data), "video/mp4", 20 * MiB)
    assert info.size == len(data)
    for key in ("uploads/a/big.bin", "uploads/b/big.bin"):
        dest = tmp_path / "copy.bin"
        await store.get_file(key, dest)
        assert dest.read_bytes() == data


async def test_streams_beyond_the_limit_store_nothing(store: ObjectStore) -> None:
    """A stream larger than its limit fails `too_large` and leaves no object behind."""
    data = b"x" * (6 * MiB)
    with pytest.raises(ObjectTooLarge) as err:
        await store.put_stream("uploads/c/too-big.mp4", chunks(data), "video/mp4", 6 * MiB - 1)
    assert err.value.code == "too_large"
    assert await store.head("uploads/c/too-big.mp4") is None


async def test_downloads_stop_at_their_limit(store: ObjectStore, tmp_path: Path) -> None:
    """A download larger than its limit fails `too_large` and leaves no file; one at the limit
    comes down whole."""
    data = os.urandom(3 * MiB + 7)
    src = tmp_path / "source.mp4"
    src.write_bytes(data)
    await store.put_file("uploads/e/source.mp4", src, "video/mp4")
    dest = tmp_path / "copy.mp4"
    with pytest.raises(ObjectTooLarge) as err:
        await store.get_file("uploads/e/source.mp4", dest, max_size=len(data) - 1)
    assert err.value.code == "too_large"
    assert not dest.exists()
    info = await store.get_file("uploads/e/source.mp4", dest, max_size=len(data))
    assert info.size == len(data) and dest.read_bytes() == data


async def test_presigned_put_with_a_plain_http_client(
    store: ObjectStore, stack: Stack, http: aiohttp.ClientSession
) -> None:
    """A client with no credentials PUTs to the presigned URL; the object is then there."""
    assert stack.services is not None
    # The gateway hands out a link with a ticket (POST /v1/uploads); do the same here.
    tickets = Tickets(stack.services.redis, stack.services.keys)
    await tickets.issue(Ticket("uploads/d/clip.mp4", "default", "clip.mp4", 1000, "video/mp4"), 60)
    url = await store.presign_put("uploads/d/clip.mp4", "video/mp4", 1000, 60)
    headers = store.upload_headers("video/mp4")
    async with http.put(url, data=b"v" * 1000, headers=headers) as r:
        assert r.status == 200, await r.text()
    head = await store.head("uploads/d/clip.mp4")
    assert head is not None
    assert head.size == 1000
    # The link is single-use: a second PUT (a leaked link) cannot replace the source.
    async with http.put(url, data=b"w" * 1000, headers=headers) as r:
        assert r.status in (403, 412), await r.text()
    assert await store.get_bytes("uploads/d/clip.mp4") == b"v" * 1000


async def test_presigned_get_names_the_download(
    store: ObjectStore, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A presigned GET serves the bytes with the right type and a download file name."""
    src = tmp_path / "subs.vtt"
    src.write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhello\n")
    await store.put_file("jobs/j2/transcript.vtt", src, "text/vtt")
    url = await store.presign_get("jobs/j2/transcript.vtt", "holiday.vtt", 60)
    async with http.get(url) as r:
        assert r.status == 200
        assert await r.read() == src.read_bytes()
        assert r.headers["Content-Type"].startswith("text/vtt")
        assert 'filename="holiday.vtt"' in r.headers["Content-Disposition"]
    tampered = url.replace("transcript.vtt", "transcript.srt")
    async with http.get(tampered) as r:
        assert r.status in (403, 404)


async def test_presigned_urls_expire(store: ObjectStore) -> None:
    """Presigned URLs carry their expiry, as asked."""
    url = await store.presign_get("jobs/j3/transcript.srt", "a.srt", 120)
    query = parse_qs(urlsplit(url).query)
    assert query.get("expires") or query.get("X-Amz-Expires") == ["120"]


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "/etc/passwd", "uploads/../../x", "uploads//x", "a\\b", "uploads/\x00"]
)
async def test_traversal_attempts_are_refused(store: ObjectStore, key: str, tmp_path: Path) -> None:
    """Keys that could escape their prefix are refused before any I/O."""
    src = tmp_path / "x"
    src.write_bytes(b"x")
    for attempt in (
        store.head(key),
        store.put_file(key, src, "text/plain"),
        store.get_bytes(key),
        store.delete(key),
        store.presign_put(key, "text/plain", 1, 60),
        store.presign_get(key, "x", 60),
    ):
        with pytest.raises(InvalidKey) as err:
            await attempt
        assert err.value.code == "invalid_key"


async def test_a_key_under_an_object_is_the_keys_fault(store: ObjectStore, tmp_path: Path) -> None:
    """A key whose folder is an object is refused as invalid_key (a 4xx), never a storage
    outage; object stores without folders simply store both."""
    src = tmp_path / "a.txt"
    src.write_text("a")
    await store.put_file("uploads/k/source", src, "text/plain")
    try:
        await store.put_file("uploads/k/source/deeper", src, "text/plain")
    except InvalidKey:
        assert store.name == "local"
    else:
        assert store.name == "s3"
