"""S3 specifics: start-up checks, readiness, public endpoints, and the CLI against a bucket."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import free_port
from tests.media import Clip
from vidstream.core.errors import ConfigError
from vidstream.core.settings import Settings
from vidstream.runtime import Stack

pytestmark = pytest.mark.parametrize("backend", ["s3"], indirect=True)


async def test_a_missing_bucket_stops_start_up(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """A bucket that does not exist fails at start, naming S3_BUCKET, not at the first job."""
    with pytest.raises(ConfigError) as err:
        async with Stack(make_settings(s3_bucket="no-such-bucket-here"), ("gateway",)):
            pass
    assert "S3_BUCKET='no-such-bucket-here' does not exist" in str(err.value)


async def test_unreachable_storage_is_reported_by_readyz(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession
) -> None:
    """With storage down the gateway still starts, and /readyz says storage is unavailable."""
    down = make_settings(s3_endpoint_url=f"http://127.0.0.1:{free_port()}", s3_timeout_s=1.0)
    async with Stack(down, ("gateway",)) as stack:
        assert stack.gateway is not None
        async with http.get(f"{stack.gateway.url}/readyz") as r:
            body = await r.json()
    assert r.status == 503
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["storage"].startswith("unavailable")


async def test_presigned_urls_carry_the_public_endpoint(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    s3_settings: dict[str, Any], tmp_path: Path,
) -> None:  # fmt: skip
    """With S3_PRESIGN_ENDPOINT_URL, links name the host clients use, and they work there."""
    inside = urlsplit(s3_settings["s3_endpoint_url"])
    public = f"http://localhost:{inside.port}"
    async with Stack(make_settings(s3_presign_endpoint_url=public), ("gateway",)) as stack:
        assert stack.services is not None
        store = stack.services.store
        src = tmp_path / "a.srt"
        src.write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
        await store.put_file("jobs/x/transcript.srt", src, "application/x-subrip")
        url = await store.presign_get("jobs/x/transcript.srt", "a.srt", 60)
        assert url.startswith(f"{public}/")
        async with http.get(url) as r:
            assert r.status == 200
            assert await r.read() == src.read_bytes()


@pytest.mark.slow
async def test_submit_cli_uploads_straight_to_the_bucket(
    make_settings: Callable[..., Settings], redis: Redis, clip: Clip
) -> None:
    """`vidstream submit --wait` PUTs to a presigned bucket URL and the job completes."""
    async with Stack(make_settings()) as stack:
        assert stack.gateway is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vidstream", "submit", str(clip.path), "--wait",
            "--gateway", stack.gateway.url, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(120):
            out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "completed" in text
    assert "rendered/" in text and "X-Amz-Signature" in text


async def test_public_bucket_links(make_settings: Callable[..., Settings], redis: Redis) -> None:
    """With S3_PUBLIC_URL, output links are plain public URLs under that base."""
    settings = make_settings(s3_public_url="https://videos.example.com/")
    async with Stack(settings, ("gateway",)) as stack:
        assert stack.services is not None
        url = await stack.services.store.presign_get("rendered/j-1.mp4", "clip.mp4", 60)
    assert url == "https://videos.example.com/rendered/j-1.mp4"
